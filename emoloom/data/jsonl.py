"""JSONL in the contract's record format (`emoloom.contract.Record`), one object per line.

Only `id` and `text` are required. A record without `taxonomy` gets the caller's (default
goemotions); one without `split` gets the requested split. Fields a record carries are kept as
they are, so a file written by `data prepare` reads back into identical records.
"""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from emoloom.atomic import atomic_write
from emoloom.contract import Record, record_error

from .base import Report, require_path

CORPUS = "jsonl"
DEFAULT_TAXONOMY = "goemotions"
HINT = "pass --source /path/to/records.jsonl (one contract record per line: at least id and text)"


def resolve(source, split: str | None) -> tuple[Path, str | None]:
    path = require_path(source, CORPUS, HINT)
    if path.is_dir():
        if not split:
            raise ValueError(f"{CORPUS}: {path} is a folder; give --split")
        cand = path / f"{split}.jsonl"
        if not cand.is_file():
            raise FileNotFoundError(f"{CORPUS}: no {cand.name} in {path}; {HINT}")
        return cand, split
    return path, split


def read_jsonl(source, split: str | None, report: Report, limit: int | None = None,
               taxonomy: str | None = None) -> list[Record]:
    path, split = resolve(source, split)
    report.file(path)
    default_taxonomy = taxonomy or DEFAULT_TAXONOMY
    records: list[Record] = []
    if limit == 0:
        return records
    seen: dict[str, int] = {}
    with open(path, "rb") as f:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8-sig" if line == 1 else "utf-8"))
            except UnicodeDecodeError as exc:
                report.bad(path, line, f"undecodable text (not UTF-8 at byte {exc.start})")
                continue
            except ValueError as exc:
                report.bad(path, line, f"invalid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                report.bad(path, line, f"expected a JSON object, got {type(obj).__name__}")
                continue
            obj.setdefault("taxonomy", default_taxonomy)
            if split is not None:
                obj.setdefault("split", split)
            try:
                rec = Record.model_validate(obj)
            except ValidationError as exc:
                report.bad(path, line, record_error(exc))
                continue
            if rec.id in seen:
                report.bad(path, line, f"duplicate id {rec.id!r} (first on line {seen[rec.id]})")
                continue
            seen[rec.id] = line
            records.append(rec)
            if limit is not None and len(records) >= limit:
                break
    return records


def write_jsonl(records, path: str | Path) -> Path:
    """Write records as JSONL (`Record.model_dump_json()` per line), atomically: a failure part
    way leaves an existing file at `path` as it was."""
    path = Path(path)
    with atomic_write(path) as f:
        for r in records:
            f.write(r.model_dump_json() + "\n")
    return path
