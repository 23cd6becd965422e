"""EmpatheticDialogues (Rashkin et al., 2019): one record per conversation (its situation text).

Two local formats, told apart by the header:

(a) the original release ``conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags``
    (one row per utterance, commas inside text written as ``_comma_``, no quoting). The `context`
    column is the conversation's emotion word and `prompt` its situation; one record per
    conversation (id = conv_id). Rows with a wrong column count (stray commas) are reported.
(b) the situation-level form ``text,aug_text,label`` (HypEmo) with label ids 0-31 in the order of
    `labels.EMPATHETIC`; `aug_text` (a machine paraphrase) is ignored.

The hub form is `facebook/empathetic_dialogues` (the columns of (a)).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable

from emoloom.contract import Record
from emoloom.labels import ED_ALIASES, EMPATHETIC

from .base import Report, csv_rows, has_undecodable, resolve_split_file

CORPUS = "empathetic"
TAXONOMY = "empathetic"
SPLIT_ALIASES = {"dev": "valid", "validation": "valid"}
ORIGINAL_COLUMNS = ("conv_id", "utterance_idx", "context", "prompt", "speaker_idx", "utterance", "selfeval", "tags")
SITUATION_COLUMNS = ("text", "aug_text", "label")
HINT = ("pass --source /path/to/empatheticdialogues/valid.csv (the original release or the "
        "situation-level text,aug_text,label CSV) or the folder holding {train,valid,test}.csv")


def resolve(source, split: str | None) -> tuple[Path, str]:
    """The file of `split` (a file, or a folder holding <split>.csv) and the split name."""
    return resolve_split_file(source, split, CORPUS, HINT, "csv", SPLIT_ALIASES, "train, valid or test")


def emotion_name(word: str) -> str | None:
    """The taxonomy name of an emotion word of the original release (None when unknown)."""
    w = word.strip().lower()
    w = ED_ALIASES.get(w, w)
    return w if w in EMPATHETIC else None


def unescape(text: str) -> str:
    return text.replace("_comma_", ",").strip()


def make_record(text: str, label: str, rid: str, split: str) -> Record:
    return Record(id=rid, text=text, corpus=CORPUS, taxonomy=TAXONOMY, split=split, labels=[label])


def read_csv(source, split: str | None, report: Report, limit: int | None = None) -> list[Record]:
    path, split = resolve(source, split)
    report.file(path)
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        header_line = f.readline()
        header = tuple(h.strip() for h in next(csv.reader([header_line]), []))
        if set(ORIGINAL_COLUMNS[:4]) <= set(header) and "utterance" in header:
            read = _read_original
        elif "text" in header and "label" in header:
            read = _read_situations
        else:
            raise ValueError(
                f"{path}:1: unrecognised EmpatheticDialogues header {list(header)}; expected the original "
                f"{','.join(ORIGINAL_COLUMNS)} or the situation-level {','.join(SITUATION_COLUMNS)}"
            )
        return [] if limit == 0 else read(f, header, path, split, report, limit)


def _read_situations(f, header, path: Path, split: str, report: Report, limit: int | None) -> list[Record]:
    reader = csv.reader(f)  # default quoting: text fields with commas are quoted
    i_text, i_label = header.index("text"), header.index("label")
    records: list[Record] = []
    row_no = -1
    for line, row in csv_rows(reader, path, report, first_line=2):
        row_no += 1
        if len(row) != len(header):
            report.bad(path, line, f"expected {len(header)} columns ({','.join(header)}), got {len(row)}")
            continue
        text, label = row[i_text], row[i_label].strip()
        if has_undecodable(text):
            report.bad(path, line, "undecodable text (not UTF-8)")
            continue
        if not label.isdigit() or int(label) >= len(EMPATHETIC):
            report.bad(path, line, f"unknown label id {label!r} (empathetic ids are 0-{len(EMPATHETIC) - 1})")
            continue
        if not text.strip():
            report.bad(path, line, "empty text")
            continue
        records.append(make_record(text.strip(), EMPATHETIC[int(label)], f"ed-{split}-{row_no:05d}", split))
        if limit is not None and len(records) >= limit:
            break
    return records


def _read_original(f, header, path: Path, split: str, report: Report, limit: int | None) -> list[Record]:
    # The release is not CSV-quoted (commas are `_comma_`), so quotes are ordinary characters.
    reader = csv.reader(f, quoting=csv.QUOTE_NONE)
    col = {name: header.index(name) for name in ORIGINAL_COLUMNS[:4]}
    rows = []
    for line, row in csv_rows(reader, path, report, first_line=2):
        if len(row) != len(header):
            report.bad(path, line, f"expected {len(header)} comma-separated columns, got {len(row)} (stray comma?)")
            continue
        if any(has_undecodable(x) for x in row):
            report.bad(path, line, "undecodable text (not UTF-8)")
            continue
        rows.append((line, {name: row[i] for name, i in col.items()}))
    return _conversations(rows, str(path), split, report, limit)


def _conversations(rows: Iterable[tuple[int, dict]], where: str, split: str, report: Report,
                   limit: int | None) -> list[Record]:
    """One record per conv_id from utterance rows (conv_id, context=emotion word, prompt)."""
    first: dict[str, tuple[int, str, str]] = {}  # conv_id -> (line, label, situation)
    order: list[str] = []
    dropped: set[str] = set()
    for line, row in rows:
        conv = str(row["conv_id"]).strip()
        if not conv:
            report.bad(where, line, "empty conv_id")
            continue
        label = emotion_name(str(row["context"]))
        if label is None:
            report.bad(where, line, f"unknown emotion {row['context']!r}")
            continue
        situation = unescape(str(row["prompt"]))
        if conv in first:
            f_line, f_label, _ = first[conv]
            if label != f_label and conv not in dropped:
                report.bad(where, line, f"conversation {conv!r}: emotion {label!r} differs from {f_label!r} on line {f_line}; conversation skipped")
                dropped.add(conv)
            continue
        if not situation:
            report.bad(where, line, "empty prompt (situation)")
            continue
        first[conv] = (line, label, situation)
        order.append(conv)
    records = []
    for conv in order:
        if conv in dropped:
            continue
        _, label, situation = first[conv]
        records.append(make_record(situation, label, conv, split))
        if limit is not None and len(records) >= limit:
            break
    return records


def from_hub_rows(rows: Iterable[dict], where: str, split: str, report: Report, limit: int | None) -> list[Record]:
    """Rows of `facebook/empathetic_dialogues` (conv_id, utterance_idx, context, prompt, ...)."""
    if limit == 0:
        return []
    return _conversations(((i, row) for i, row in enumerate(rows)), where, split, report, limit)
