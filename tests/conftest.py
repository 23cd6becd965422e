"""Shared fixtures. `shared_data`: the licensed real datasets (read only, never copied here)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA_DEFAULT = REPO.parent / "shared" / "data"

# The suite runs offline and hermetic: no hub, no telemetry, and built-in models/tokenizers are
# built into a cache private to this test session (subprocesses inherit it).
for _key, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                     "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true",
                     "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_key, _value)
if "EMOLOOM_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["EMOLOOM_CACHE"] = tempfile.mkdtemp(prefix="emoloom-test-cache-")
    atexit.register(shutil.rmtree, os.environ["EMOLOOM_CACHE"], True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real corpora (see its README.md); EMOLOOM_SHARED_DATA overrides the default
    `<checkout>/../shared/data`. Tests that use it are skipped when it is absent."""
    path = Path(os.environ.get("EMOLOOM_SHARED_DATA") or SHARED_DATA_DEFAULT)
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set EMOLOOM_SHARED_DATA to the shared/data folder)")
    return path
