"""One trial of a screen: train a candidate through Ray Train, evaluate it KV-off, log to MLflow."""
from __future__ import annotations

import json
import math
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from emoloom import tracking
from emoloom.config import flatten


@dataclass
class TrialContext:
    """What every trial needs from the driver (picklable; shipped with tune.with_parameters)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    screen_hash: str
    screen: dict
    fixed: dict = field(default_factory=dict)
    metric: str = "objective"
    mode: str = "max"
    trials_dir: str = "runs/trials"


@lru_cache(maxsize=1)
def train_keys() -> frozenset[str]:
    """Every dotted key of the training config (what spaces and `train:` may set)."""
    from emoloom.train.config import TrainConfig

    return frozenset(flatten(TrainConfig().model_dump(mode="json")))


def build_train_config(screen_train: dict, fixed: dict, params: dict, out: Path, seed: int):
    """Screen-wide training values < the space's fixed values < the sampled parameters."""
    from emoloom.config import load_config
    from emoloom.train.config import TrainConfig

    # Values travel as JSON text, which the override parser (YAML) reads back exactly.
    overrides = [f"{k}={json.dumps(v)}" for k, v in {**fixed, **params}.items()]
    base = {**json.loads(json.dumps(screen_train)), "out": str(out), "seed": seed}
    return load_config(TrainConfig, None, overrides, base=base)


def eval_records(screen: dict, train_cfg, dev_limit: int | None):
    """Dev records (the training data's dev split, lexicon-weak VAD) and cross-corpus records.

    Cross-corpus records are projected onto Ekman-7; when the training taxonomy contains the
    Ekman names (GoEmotions does), they are asked with the training taxonomy's prompt, so the
    model answers in the label set it learned and the Ekman-projected F1 compares like with like.
    Returns (dev, {name: records}, {file: sha256})."""
    from emoloom.data import load_corpus
    from emoloom.data.base import project
    from emoloom.labels import EKMAN, TAXONOMIES
    from emoloom.train.examples import prepare_data

    prepared = prepare_data(train_cfg)
    dev = prepared.dev[:dev_limit] if dev_limit else list(prepared.dev)
    train_tax = prepared.taxonomies[0] if prepared.taxonomies else "goemotions"
    files: dict[str, str] = dict(prepared.stats.get("sha256", {}))
    cross: dict[str, list] = {}
    for src in screen["eval"]["cross_corpus"]:
        data = load_corpus(src["corpus"], src.get("source"), src["split"], taxonomy=src.get("taxonomy"),
                           limit=src.get("limit"))
        records = project(data.with_weak_vad(), "ekman")
        if set(EKMAN) <= set(TAXONOMIES[train_tax]):
            records = [r.model_copy(update={"taxonomy": train_tax}) for r in records]
        files.update(data.files)
        name = "/".join(x for x in (src["corpus"], src.get("taxonomy"), src["split"]) if x)
        cross[name] = records
    return dev, cross, files
