"""Search spaces: typed YAML (tune_spaces/*.yaml) that maps one-to-one onto Optuna distributions.

A parameter name is a dotted path into the training config (`optim.lr`, `loss.vad`, ...). Each
file also says what to optimise (metric, mode), how many trials, how many at once, the ASHA
settings, the sampler seed, and baseline configurations evaluated first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from emoloom.config import AnyFinite, ConfigError, StrictModel, did_you_mean, explain

SPACES_DIR = Path(__file__).resolve().parents[2] / "tune_spaces"


class FloatParam(StrictModel):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _range(self):
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined (Optuna rejects it)")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def distribution(self):
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)


class IntParam(StrictModel):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _range(self):
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and (self.low <= 0 or self.step != 1):
            raise ValueError("a log-scaled int range needs low > 0 and step 1")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def distribution(self):
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(StrictModel):
    type: Literal["categorical"]
    choices: list[AnyFinite] = Field(min_length=1)

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def distribution(self):
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(self.choices)


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]


class Asha(StrictModel):
    enabled: bool = True
    time_attr: str = "epoch"
    max_t: int = Field(3, ge=1)
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2, gt=1)
    # What ASHA compares at a rung (emoloom/screen/signals.py); every signal is logged per epoch
    # whatever the choice, so `python -m emoloom fidelity` can compare them on the same trials.
    # nll by evidence: bench/fidelity.py found the decoded value on the epoch rows no better than
    # random stops at the first rung, the label NLL well above it (README: fidelity).
    signal: str = "nll"

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, value: str) -> str:
        from emoloom.screen.signals import SIGNALS

        if value not in SIGNALS:
            raise ValueError(f"unknown rung signal {value!r} (one of {', '.join(SIGNALS)}){did_you_mean(value, SIGNALS)}")
        return value


# What a screen can rank by: a key of the trial's evaluation summary, read on the epoch sample
# at every rung and on the full evaluation at the end. `objective` is dev Macro-F1 with parse
# failures counted as wrong (macro_f1_strict); the others are the paper's metrics beside it.
Metric = Literal["objective", "macro_f1_strict", "macro_f1", "macro_recall", "micro_f1", "ekman_macro_f1",
                 "parse_ok_rate", "vad_1mrmse", "vad_1mrmse_strict"]


class SearchSpace(StrictModel):
    description: str = ""
    metric: Metric = "objective"
    mode: Literal["max", "min"] = "max"
    num_trials: int = Field(8, ge=1)
    max_concurrent: int = Field(2, ge=1)
    seed: int = 0
    sampler: Literal["tpe", "random"] = "tpe"
    asha: Asha = Asha()
    # Fixed training-config values for every trial of this space (dotted keys).
    fixed: dict[str, AnyFinite] = Field(default_factory=dict)
    params: dict[str, Param] = Field(default_factory=dict)
    # Evaluated first, in order; each gives a value for every parameter of `params`.
    baselines: list[dict[str, AnyFinite]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _baselines_cover_params(self):
        for i, base in enumerate(self.baselines):
            missing = sorted(set(self.params) - set(base))
            extra = sorted(set(base) - set(self.params))
            if missing or extra:
                raise ValueError(f"baselines[{i}]: missing {missing}, not in params {extra}")
            for name, value in base.items():
                if not self.params[name].contains(value):
                    raise ValueError(f"baselines[{i}].{name}={value!r} lies outside its range")
        if self.baselines and len(self.baselines) > self.num_trials:
            raise ValueError(f"{len(self.baselines)} baselines but num_trials={self.num_trials}")
        return self

    def distributions(self) -> dict[str, Any]:
        return {name: p.distribution() for name, p in self.params.items()}

    def summary(self) -> dict[str, Any]:
        return {name: p.model_dump(exclude={"type"}) | {"type": p.type} for name, p in self.params.items()}


def check_keys(space: SearchSpace, allowed: set[str], origin: str) -> None:
    """Every parameter and fixed key must name a training-config field (dotted)."""
    for section, names in (("params", space.params), ("fixed", space.fixed)):
        for name in names:
            if name not in allowed:
                raise ConfigError(f"{origin}: {section}.{name}: not a training-config key{did_you_mean(name, allowed)}")


def resolve_space_path(name: str | Path) -> Path:
    """A path, or the name of a shipped space (`default` -> tune_spaces/default.yaml)."""
    path = Path(name)
    if path.exists() and not path.is_dir():
        return path
    shipped = SPACES_DIR / f"{name}.yaml"
    if shipped.exists():  # a shipped name wins over a folder of that name in the working directory
        return shipped
    known = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
    if path.is_dir():
        raise ConfigError(f"space={name}: is a folder; give a search-space YAML file or a shipped space "
                          f"({', '.join(known)})")
    raise ConfigError(f"search space {str(name)!r}: no such file, and not a shipped space ({', '.join(known)})")


def load_space(name: str | Path) -> SearchSpace:
    path = resolve_space_path(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:  # unreadable (permissions, a special file): one line, not a traceback
        raise ConfigError(f"space={name}: cannot read {path} ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(explain(exc, SearchSpace, str(path))) from None
