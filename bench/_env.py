"""What every real-data bench script starts with: the checkout on sys.path, offline hubs, and where
the GoEmotions data are (`$EMOLOOM_DATA`, else ../shared/data next to the checkout).

    from _env import DATA, markdown_table     # bench/ is sys.path[0] when a script here runs
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("EMOLOOM_DATA", REPO.parent / "shared" / "data")) / "goemotions"

for _key, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
                     "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_key, _value)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of `rows` (missing values blank; floats to 3 decimals)."""
    def cell(value) -> str:
        return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
