"""Provenance recorded with every result: package versions, git commit, host."""
from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("emoloom", "torch", "transformers", "peft", "deepspeed", "ray", "optuna", "mlflow",
            "datasets", "textblob", "scikit-learn", "scipy", "numpy", "pydantic")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@lru_cache(maxsize=1)
def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict:
    versions = package_versions()
    return {
        "versions": versions,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "tags": {"emoloom.git_commit": git_commit(),
                 **{f"emoloom.version.{k}": v for k, v in versions.items()}},
    }
