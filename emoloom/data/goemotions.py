"""GoEmotions (Demszky et al., 2020): the original TSV release and the hub's `simplified` config.

TSV: no header, 3 columns: text, comma-separated label ids (0-27, index into emotions.txt),
Reddit comment id. Multi-label. One row per line (no field of the release spans lines), but
texts that contain '"' are CSV-quoted (137 dev rows): each line is unquoted on its own with
`csv` (tab delimiter, strict), so a stray '"' costs its own row only; read as one CSV stream,
the field it opens swallows every row up to the next quote.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable

from emoloom.contract import Record
from emoloom.labels import GOEMOTIONS

from .base import Report, has_undecodable, resolve_split_file

CORPUS = "goemotions"
TAXONOMY = "goemotions"
# Split names of the original release; other common spellings map onto them.
SPLIT_ALIASES = {"validation": "dev", "valid": "dev"}
HINT = "pass --source /path/to/goemotions/train.tsv (original TSV) or the folder holding {train,dev,test}.tsv"


def resolve(source, split: str | None) -> tuple[Path, str]:
    """The file of `split` (a file, or a folder holding <split>.tsv) and the split name."""
    return resolve_split_file(source, split, CORPUS, HINT, "tsv", SPLIT_ALIASES, "train, dev or test")


def parse_label_ids(field: str) -> tuple[list[str] | None, str | None]:
    """Label names of a comma-separated id field, or (None, reason)."""
    raw = [x.strip() for x in field.split(",")]
    if not field.strip() or not all(raw):
        return None, f"empty label id in {field!r}"
    names = []
    for x in raw:
        if not x.isdigit() or int(x) >= len(GOEMOTIONS):
            return None, f"unknown label id {x!r} (goemotions ids are 0-{len(GOEMOTIONS) - 1})"
        names.append(GOEMOTIONS[int(x)])
    return names, None


def make_record(text: str, labels: list[str], rid: str, split: str) -> Record:
    return Record(id=rid, text=text, corpus=CORPUS, taxonomy=TAXONOMY, split=split, labels=labels)


def read_tsv(source, split: str | None, report: Report, limit: int | None = None) -> list[Record]:
    path, split = resolve(source, split)
    report.file(path)
    records: list[Record] = []
    if limit == 0:
        return records
    seen: dict[str, int] = {}
    # newline="\n": rows end at "\n" only (a lone "\r" inside a comment is text)
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="\n") as f:
        for line, raw in enumerate(f, start=1):
            raw = raw.removesuffix("\n").removesuffix("\r")
            if not raw:
                continue  # blank lines are no rows
            try:
                row = next(csv.reader([raw], delimiter="\t", strict=True))
            except csv.Error as exc:
                hint = " (unclosed '\"' quote)" if str(exc) == "unexpected end of data" else ""
                report.bad(path, line, f"unreadable CSV row: {exc}{hint}")
                continue
            if len(row) != 3:
                report.bad(path, line, f"expected 3 tab-separated columns (text, label ids, id), got {len(row)}")
                continue
            text, ids, rid = row
            if any(has_undecodable(x) for x in row):
                report.bad(path, line, "undecodable text (not UTF-8)")
                continue
            labels, why = parse_label_ids(ids)
            if labels is None:
                report.bad(path, line, why)
                continue
            rid = rid.strip()
            if not rid:
                report.bad(path, line, "empty comment id")
                continue
            if not text.strip():
                report.bad(path, line, "empty text")
                continue
            if rid in seen:
                report.bad(path, line, f"duplicate id {rid!r} (first on line {seen[rid]})")
                continue
            seen[rid] = line
            records.append(make_record(text, labels, rid, split))
            if limit is not None and len(records) >= limit:
                break
    return records


def from_hub_rows(rows: Iterable[dict], where: str, split: str, report: Report, limit: int | None) -> list[Record]:
    """Rows of `google-research-datasets/go_emotions` (config simplified: text, labels, id)."""
    records: list[Record] = []
    if limit == 0:
        return records
    for i, row in enumerate(rows):
        ids = row.get("labels")
        if not isinstance(ids, list) or not ids or not all(isinstance(x, int) and 0 <= x < len(GOEMOTIONS) for x in ids):
            report.bad(where, i, f"unknown or missing label ids {ids!r}")
            continue
        text, rid = row.get("text"), row.get("id")
        if not isinstance(text, str) or not text.strip() or not rid:
            report.bad(where, i, "empty text or id")
            continue
        records.append(make_record(text, [GOEMOTIONS[x] for x in ids], str(rid), split))
        if limit is not None and len(records) >= limit:
            break
    return records
