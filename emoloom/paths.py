"""Local paths in configs: `${VAR:-default}` expanded and made absolute where the command starts.

Every Tune trial and Ray Train worker runs in a working directory of its own, so a relative data
path in a screen or training config would point nowhere there; configs are resolved at load time
(`emoloom.screen.presets.resolve_paths`, the `train` command).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from emoloom.config import ConfigError

_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand(value: str) -> str:
    """`${VAR}` / `${VAR:-default}` from the environment, then `~`."""
    def sub(m: re.Match) -> str:
        got = os.environ.get(m.group(1))
        if got:
            return got
        if m.group(2) is None:
            raise ConfigError(f"{value!r}: environment variable {m.group(1)} is not set (or write "
                              f"${{{m.group(1)}:-default}})")
        return m.group(2)

    return os.path.expanduser(_VAR.sub(sub, value))


def absolute_path(value: Any, cwd: Path | None) -> Any:
    """An existing local path made absolute (cwd None: only expanded); anything else (a hub id, a
    model name, a path only a cluster has) as it is, for check_resolvable to judge."""
    if not isinstance(value, str) or not value:
        return value
    text = expand(value)
    return str((cwd / text).resolve()) if cwd is not None and os.path.exists(cwd / text) else text


# dotted training keys that hold a local path (model.name only when it is a folder)
TRAIN_PATH_KEYS = ("data.lexicon", "distributed.deepspeed_config", "model.name")


def train_paths(values: dict, cwd: Path | None, prefix: str = "") -> dict:
    """Training-config values (nested dicts) with their local input paths resolved."""
    out = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if full == "data.sources" and isinstance(value, list):
            value = [{**s, "source": absolute_path(s.get("source"), cwd)} if isinstance(s, dict) else s for s in value]
        elif full in TRAIN_PATH_KEYS:
            value = absolute_path(value, cwd)
        elif isinstance(value, dict):  # nested sections (`data: {sources: ...}`)
            value = train_paths(value, cwd, full + ".")
        out[key] = value
    return out
