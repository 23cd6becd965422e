"""Screen presets by name (`python -m emoloom.screen goemotions` -> screens/goemotions.yaml), space
overrides on the command line (`space.num_trials=2`), and the config's paths resolved at load time.

Paths are made absolute where the command starts because every Tune trial runs in a working
directory of its own; `${VAR:-default}` in a path lets a preset find its data root
(`${EMOLOOM_DATA:-../shared/data}`).
"""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from emoloom.config import ConfigError, did_you_mean, explain, parse_override
from emoloom.paths import absolute_path, train_paths

PRESETS_DIR = Path(__file__).resolve().parents[2] / "screens"


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_screen(item: str) -> str:
    """A screen config file, or the name of a shipped preset (a file of that name wins)."""
    if os.path.exists(item) or item.endswith((".yaml", ".yml")) or os.sep in item:
        return item  # a path: load_config reports a missing or unreadable file
    shipped = PRESETS_DIR / f"{item}.yaml"
    if shipped.is_file():
        return str(shipped)
    raise ConfigError(f"{item!r}: no such screen config file, and not a preset "
                      f"({', '.join(presets())}){did_you_mean(item, presets())} (overrides are key=value)")


# -- space.* overrides ------------------------------------------------------------------------

def split_space_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """(`space.X=...` overrides, the rest); `space=NAME` itself stays with the screen config."""
    space = [i for i in items if i.partition("=")[0].strip().startswith("space.")]
    return space, [i for i in items if i not in space]


def apply_space_overrides(space, items: list[str], origin: str):
    """The search space with `space.num_trials=2`, `space.asha.max_t=1`, `space.fixed.epochs=1`,
    `space.params.optim.lr={type: float, low: 0.001, high: 0.01}` applied (fixed and params take
    the rest of the key as one dotted training key), validated like the file itself."""
    from emoloom.screen.space import SearchSpace

    if not items:
        return space
    tree = space.model_dump(mode="json")
    for item in items:
        keys, value = parse_override(item)
        keys = keys[1:]  # drop "space"
        if keys[0] in ("fixed", "params") and len(keys) > 1:  # their keys are dotted training keys
            keys = [keys[0], ".".join(keys[1:])]
        node = tree
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}  # validation names it if this was not a section
            node = node[key]
        node[keys[-1]] = value
    try:
        return SearchSpace.model_validate(tree)
    except ValidationError as exc:
        msg = explain(exc, SearchSpace, f"{origin} + overrides {' '.join(items)}")
        raise ConfigError(msg.replace("did you mean '", "did you mean 'space.")) from None


def check_top_keys(items: list[str]) -> None:
    """`num_trials=2` is a space key given without `space.`: say so instead of a bare "unknown key"."""
    from emoloom.screen.config import ScreenConfig
    from emoloom.screen.space import SearchSpace

    for item in items:
        if "=" not in item:
            continue
        top = item.partition("=")[0].strip().split(".")[0]
        if top in ScreenConfig.model_fields:
            continue
        if top in SearchSpace.model_fields:
            hint = f"; did you mean 'space.{item.partition('=')[0].strip()}'?"
        else:
            hint = did_you_mean(top, [*ScreenConfig.model_fields, *(f"space.{k}" for k in SearchSpace.model_fields)])
        raise ConfigError(f"override {item}: unknown key {top!r}{hint}")


def resolve_paths(cfg, space, cwd: str | Path | None = None, absolute: bool = True):
    """(cfg, space) with every local path of the screen (training sources and lexicon, the space's
    fixed values, cross-corpus sources) expanded and, with `absolute`, made absolute against `cwd`
    (default: here).

    The screen's hash is taken on the expanded paths before they are made absolute
    (`absolute=False`): the same screen started from a copy of the checkout elsewhere (a Ray job's
    working dir is a fresh copy every time) must keep its identity, or it could never be resumed,
    while `EMOLOOM_DATA` pointing at other data makes another screen. What the data was is recorded
    per trial as sha256."""
    base = Path(cwd or os.getcwd()) if absolute else None
    cross = [s.model_copy(update={"source": absolute_path(s.source, base)}) for s in cfg.eval.cross_corpus]
    cfg = cfg.model_copy(update={"train": train_paths(cfg.train, base),
                                 "eval": cfg.eval.model_copy(update={"cross_corpus": cross})})
    space = space.model_copy(update={"fixed": train_paths(space.fixed, base)})
    return cfg, space
