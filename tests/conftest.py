"""Shared fixtures. `shared_data`: the licensed real datasets (read only, never copied here)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA_DEFAULT = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real corpora (see its README.md); EMOLOOM_SHARED_DATA overrides the default
    `<checkout>/../shared/data`. Tests that use it are skipped when it is absent."""
    path = Path(os.environ.get("EMOLOOM_SHARED_DATA") or SHARED_DATA_DEFAULT)
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set EMOLOOM_SHARED_DATA to the shared/data folder)")
    return path
