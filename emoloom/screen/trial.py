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
