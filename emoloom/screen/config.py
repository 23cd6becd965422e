"""The screen's typed config (SCREEN.yaml + key=value overrides)."""
from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field

from emoloom.config import StrictModel


class DataSource(StrictModel):
    """A corpus split for evaluation (`emoloom.data.load_corpus` arguments)."""

    corpus: str
    source: str | None = None  # None only for `synthetic` (generated)
    taxonomy: str | None = None  # synthetic: which sub-corpus
    split: str
    limit: int | None = None


class EvalOptions(StrictModel):
    decoder: Literal["reference", "fast", "constrained", "score"] = "fast"
    max_new_tokens: int = 96
    batch_size: int = 16
    dev_limit: int | None = 100  # KV-off evaluation cost grows with rows: screen on a sample
    epoch_limit: int = 32  # dev rows decoded after every epoch (what ASHA compares)
    cross_corpus: list[DataSource] = Field(default_factory=list)


class MlflowOptions(StrictModel):
    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else sqlite in the storage folder
    experiment: str = "emoloom-screen"
    registered_model: str | None = "emoloom-best"


class RayOptions(StrictModel):
    address: str | None = None  # None: RAY_ADDRESS / a Ray job's cluster, else a local Ray
    num_cpus: int | None = None  # local Ray only


class TrialResources(StrictModel):
    """What one trial asks of the cluster."""

    driver_cpus: float = 1.0  # the trial function itself (runs evaluation when eval_actors=0)
    # A custom resource each trial driver also takes one unit of; cluster/ offers `trial_driver`
    # on the head only, which keeps drivers off GPU nodes and caps how many run at once.
    driver_resource: str | None = None
    train_workers: int = 0  # Ray Train workers (DeepSpeed ranks); 0 = train inside the trial
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    eval_actors: int = 0  # evaluation actor pool size; 0 = evaluate inside the trial
    gpus_per_eval_actor: float = 0.0


class ClusterShape(StrictModel):
    """A cluster description for --dry-run planning (no Ray needed)."""

    nodes: int = 1
    cpus_per_node: int = Field(default_factory=lambda: os.cpu_count() or 1)
    gpus_per_node: int = 0


class ScreenConfig(StrictModel):
    name: str = "default"
    space: str = "default"  # a tune_spaces/ name or a path
    # Training-config values shared by every trial (nested, or dotted keys).
    train: dict[str, Any] = Field(default_factory=dict)
    eval: EvalOptions = EvalOptions()
    mlflow: MlflowOptions = MlflowOptions()
    ray: RayOptions = RayOptions()
    resources: TrialResources = TrialResources()
    cluster: ClusterShape | None = None
    storage: str = "runs"  # Tune results, Optuna study, default MLflow store
    seed: int = 0
    trial_timeout_s: float | None = None
    fail_fast: bool = False  # False: a failing trial is recorded and the screen goes on
