"""The screen's typed config (SCREEN.yaml + key=value overrides)."""
from __future__ import annotations

import os
import posixpath
from typing import TYPE_CHECKING

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from emoloom.config import AnyFinite, ConfigError, StrictModel
from emoloom.eval.decoding import DecoderName

if TYPE_CHECKING:
    from emoloom.screen.space import SearchSpace
    from emoloom.train.config import TrainConfig


def _invalid(message: str) -> PydanticCustomError:
    """A validator's error whose message is printed as it is (a ValueError's gets "Value error, ")."""
    return PydanticCustomError("invalid", "{message}", {"message": message})


class DataSource(StrictModel):
    """A corpus split for evaluation (`emoloom.data.load_corpus` arguments)."""

    corpus: str
    source: str | None = None  # None only for `synthetic` (generated)
    taxonomy: str | None = None  # synthetic: which sub-corpus
    split: str
    limit: int | None = Field(None, ge=1)


class EvalOptions(StrictModel):
    decoder: DecoderName = "fast"
    max_new_tokens: int = Field(96, ge=1)
    batch_size: int = Field(16, ge=1)
    # KV-off evaluation cost grows with rows: screen on a sample (None: every dev row). Bounded
    # below because the trial slices with it: -1 would silently drop the last row.
    dev_limit: int | None = Field(100, ge=1)
    epoch_limit: int = Field(32, ge=1)  # dev rows decoded after every epoch (the `decoded` rung signal)
    cross_corpus: list[DataSource] = Field(default_factory=list)


class MlflowOptions(StrictModel):
    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else sqlite in the storage folder
    experiment: str = "emoloom-screen"
    registered_model: str | None = "emoloom-best"  # None (or ""): register nothing

    # MLflow's own rules (mlflow.utils.validation), checked here so that a dry run refuses what
    # the real run would only fail on in tracking set-up, or at its very end when registering.
    @field_validator("experiment")
    @classmethod
    def _experiment(cls, value: str) -> str:
        if not value.strip():
            raise _invalid("an MLflow experiment needs a name")
        if len(value) > 500:
            raise _invalid(f"MLflow takes experiment names of at most 500 characters, got {len(value)}")
        return value

    @field_validator("registered_model")
    @classmethod
    def _registered_model(cls, value: str | None) -> str | None:
        if not value:
            return value
        if not value.strip():
            raise _invalid("a registered model needs a name (null registers nothing)")
        if "/" in value or ":" in value:
            raise _invalid(f"{value!r}: MLflow model names cannot contain '/' or ':'")
        norm = posixpath.normpath(value)
        if norm != value or norm == "." or norm.startswith(".."):
            raise _invalid(f"{value!r}: MLflow refuses model names that read as another path ({norm!r})")
        return value


class RayOptions(StrictModel):
    address: str | None = None  # None: RAY_ADDRESS / a Ray job's cluster, else a local Ray
    num_cpus: int | None = Field(None, ge=1)  # local Ray only


class TrialResources(StrictModel):
    """What one trial asks of the cluster."""

    driver_cpus: float = Field(1.0, ge=0)  # the trial function itself (runs evaluation when eval_actors=0)
    # A custom resource each trial driver also takes one unit of; cluster/ offers `trial_driver`
    # on the head only, which keeps drivers off GPU nodes and caps how many run at once.
    driver_resource: str | None = None
    train_workers: int = Field(0, ge=0)  # Ray Train workers (DeepSpeed ranks); 0 = train inside the trial
    cpus_per_worker: float = Field(1.0, ge=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    eval_actors: int = Field(0, ge=0)  # evaluation actor pool size; 0 = evaluate inside the trial
    gpus_per_eval_actor: float = Field(0.0, ge=0)


class ClusterShape(StrictModel):
    """A cluster description for --dry-run planning (no Ray needed)."""

    nodes: int = Field(1, ge=1)
    cpus_per_node: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    gpus_per_node: int = Field(0, ge=0)


class FidelityOptions(StrictModel):
    """The fidelity audit run when the screen ends (`python -m emoloom fidelity` does the same on
    a finished screen): retrain the top `top` finished trials plus `random` others (stopped ones
    included) at `budget_x` times the training budget and compare rankings."""

    top: int = Field(3, ge=1)
    random: int = Field(2, ge=0)
    # Multiplies the trial's epochs (steps per epoch unchanged), or max_steps when it sets them.
    budget_x: float = Field(4.0, gt=0)
    max_concurrent: int | None = Field(None, ge=1)  # None: the space's max_concurrent
    # Point the registered model's `best` alias at the full-budget winner's retrained adapter.
    register_winner: bool = False


class ScreenConfig(StrictModel):
    name: str = "default"  # results go to <storage>/<name>-<hash>/
    space: str = "default"  # a tune_spaces/ name or a path
    # Training-config values shared by every trial (nested, or dotted keys).
    train: dict[str, AnyFinite] = Field(default_factory=dict)
    eval: EvalOptions = EvalOptions()
    mlflow: MlflowOptions = MlflowOptions()
    ray: RayOptions = RayOptions()
    resources: TrialResources = TrialResources()
    cluster: ClusterShape | None = None
    storage: str = "runs"  # Tune results, Optuna study, default MLflow store
    seed: int = 0
    trial_timeout_s: float | None = Field(None, gt=0)
    fail_fast: bool = False  # False: a failing trial is recorded and the screen goes on
    fidelity: FidelityOptions | None = None  # None: no audit when the screen ends

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, value: str) -> str:
        # the name becomes a folder under `storage`: `../x` or `a/b` would write elsewhere
        if not value or any(c in value for c in "/\\\0"):
            raise _invalid(f"{value!r}: a screen name is one folder name (no '/', '\\' or NUL)")
        return value

    @field_validator("storage")
    @classmethod
    def _expanded(cls, value: str) -> str:
        # ${VAR:-default} and ~ as in data paths, so the folder is not named "${HOME}" literally
        from emoloom.paths import expand

        try:
            return expand(value)
        except ConfigError as exc:
            raise _invalid(str(exc)) from None


def check_resolvable(cfg: ScreenConfig, space: "SearchSpace", train_cfg: "TrainConfig", origin: str,
                     dry_run: bool = False) -> list[str]:
    """ConfigError for what trials would otherwise fail on one by one: a model name that resolves
    to nothing, a local path (model, data, lexicon) that does not exist, relative paths taken
    from the working directory. Offline and cheap, so --dry-run runs it too: hub ids are judged by
    their shape, never looked up.

    Missing paths are only warnings (returned) where the trials' filesystem is not this one: a dry
    run of a screen for a cluster (ray.address: the real run checks on the cluster's head), or a
    Ray Client driver (ray://)."""
    from emoloom.data import is_hub_id
    from emoloom.data.registry import HUB_CORPORA
    from emoloom.models import check_name

    address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or ""
    elsewhere = bool(address) and (dry_run or address.startswith("ray://"))
    missing: list[str] = []

    def key(name: str) -> str:  # the space's fixed values override the screen's train: section
        return f"{cfg.space}: fixed.{name}" if name in space.fixed else f"{origin}: train.{name}"

    names = [(key("model.name"), train_cfg.model.name)]
    param = space.params.get("model.name")
    if param is not None and param.type == "categorical":
        names += [(f"{cfg.space}: params.model.name", str(choice)) for choice in param.choices]
    for where, name in names:
        try:
            check_name(name)
        except FileNotFoundError as exc:
            missing.append(f"{where}: {exc}")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    paths = [(f"{key('data.sources')}[{i}].source", s.corpus, s.source) for i, s in enumerate(train_cfg.data.sources)]
    paths += [(f"{origin}: eval.cross_corpus[{i}].source", s.corpus, s.source)
              for i, s in enumerate(cfg.eval.cross_corpus)]
    paths.append((key("data.lexicon"), None, train_cfg.data.lexicon))
    for where, corpus, source in paths:
        if source is None or (corpus in HUB_CORPORA and is_hub_id(source)):
            continue  # generated (synthetic), the built-in lexicon, or a hub dataset
        if not os.path.exists(os.path.expanduser(source)):
            missing.append(f"{where}: {source!r}: no such file or folder")
    if missing and not elsewhere:
        raise ConfigError(f"{missing[0]} (relative paths are read from {os.getcwd()})")
    return [f"{m} on this machine (the cluster's nodes must have it)" for m in missing]
