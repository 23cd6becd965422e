"""Shared pieces of the corpus readers: bad-row reporting, file checksums, hub-id detection.

Every reader reports a bad row as ``file:line: reason`` through a `Report`. By default the row is
skipped and the reason kept (`LoadResult.skipped`); with ``strict=True`` the first bad row raises
`BadRowError` (a ValueError) carrying the same ``file:line: reason`` text. No reader guesses a
label for a row it cannot read: a row is either read exactly or skipped and reported.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from emoloom.contract import Record, VadSource
from emoloom.labels import TAXONOMIES, taxonomy as taxonomy_labels, to_ekman


_TRUE = {"1", "true", "yes", "on"}


class BadRowError(ValueError):
    """A malformed input row under ``strict=True``; the message starts with ``file:line:``."""


class HubOfflineError(RuntimeError):
    """A Hugging Face Hub source was requested while the hub is switched off (HF_*_OFFLINE=1)."""


class Report:
    """Collects the input files read (with sha256) and the bad rows (``file:line: reason``)."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.skipped: list[str] = []
        self.files: dict[str, str] = {}

    def bad(self, where: str | Path, line: int | None, reason: str) -> None:
        msg = f"{where}:{line}: {reason}" if line is not None else f"{where}: {reason}"
        if self.strict:
            raise BadRowError(msg)
        self.skipped.append(msg)

    def file(self, path: str | Path) -> Path:
        """Register an input file (its sha256 goes to the stats) and return it as a Path. Every
        reader's file is text meant as UTF-8: one in UTF-16 is refused as a whole, since read as
        UTF-8 each of its rows would be skipped for a stray NUL."""
        path = Path(path)
        self.files[str(path)] = sha256_file(path)
        with open(path, "rb") as f:
            head = f.read(4096)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")) or head.count(0) > len(head) // 4 > 0:
            raise ValueError(f"{path}: not UTF-8 (looks like UTF-16); save it as UTF-8 and read it again")
        return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def csv_rows(reader, path, report: "Report", first_line: int = 1):
    """(line, row) of a csv.reader; `line` is where the row starts (rows may span lines). A row
    that `csv` cannot read (e.g. a field over the size limit) is reported and reading goes on.
    `first_line` is the file line of the reader's first line (2 after a header read by hand)."""
    offset = first_line - 1
    start = first_line
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.bad(path, start, f"unreadable CSV row: {exc}")
            start = reader.line_num + offset + 1
            continue
        line, start = start, reader.line_num + offset + 1
        if row:  # blank lines are no rows
            yield line, row


def has_undecodable(text: str) -> bool:
    """True when `text` came from bytes that are not UTF-8 (read with errors='surrogateescape')."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


# --------------------------------------------------------------------------------------------
# Local path or hub id
# --------------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FILE_SUFFIXES = {".tsv", ".csv", ".txt", ".jsonl", ".json", ".zip", ".gz", ".parquet", ".arrow"}
# Legacy hub ids without an owner, and where they live now.
HUB_ALIASES = {
    "go_emotions": "google-research-datasets/go_emotions",
    "empathetic_dialogues": "facebook/empathetic_dialogues",
    "daily_dialog": "li2017dailydialog/daily_dialog",
}


def is_hub_id(source: str | Path | None) -> bool:
    """A source is a hub id when it is no existing path and looks like ``owner/name``."""
    if source is None:
        return False
    s = str(source)
    if os.path.exists(s):
        return False
    if s in HUB_ALIASES:
        return True
    return bool(_HUB_ID.match(s)) and Path(s).suffix.lower() not in _FILE_SUFFIXES


def hub_offline() -> str | None:
    """The name of the env var that switches the hub off, or None when the hub may be used."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    return None


def require_path(source: str | Path | None, corpus: str, hint: str) -> Path:
    """`source` as an existing Path, or a FileNotFoundError that says what to pass."""
    if source is None:
        raise FileNotFoundError(f"{corpus}: no --source given; {hint}")
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{corpus}: {str(source)!r} does not exist; {hint}")
    return path


def resolve_split_file(source, split: str | None, corpus: str, hint: str, suffix: str,
                       aliases: dict[str, str], names: str) -> tuple[Path, str]:
    """The file of `split`: `source` itself, or `<split>.<suffix>` (or its alias) in the folder
    `source`. Returns (file, split name); the split defaults to the file's stem."""
    path = require_path(source, corpus, hint)
    if path.is_dir():
        if not split:
            raise ValueError(f"{corpus}: {path} is a folder; give --split ({names})")
        name = aliases.get(split, split)
        for cand in (path / f"{name}.{suffix}", path / f"{split}.{suffix}"):
            if cand.is_file():
                return cand, split
        raise FileNotFoundError(f"{corpus}: no {name}.{suffix} in {path}; {hint}")
    return path, split or path.stem


# --------------------------------------------------------------------------------------------
# Taxonomy projection (e.g. any corpus -> ekman)
# --------------------------------------------------------------------------------------------


def project(records: list[Record], target: str | None) -> list[Record]:
    """Records re-labelled onto `target` (only "ekman" is a projection; same taxonomy is a no-op)."""
    if target is None:
        return records
    taxonomy_labels(target)
    out = []
    for r in records:
        if r.taxonomy == target:
            out.append(r)
            continue
        if target != "ekman":
            raise ValueError(
                f"corpus {r.corpus!r} has taxonomy {r.taxonomy!r}; it can only be read as "
                f"{r.taxonomy!r} or projected onto 'ekman', not {target!r}"
            )
        labels = list(dict.fromkeys(to_ekman(r.taxonomy, l) for l in r.labels))
        meta = dict(r.meta, source_taxonomy=r.taxonomy, source_labels=list(r.labels))
        out.append(r.model_copy(update={"taxonomy": target, "labels": labels, "meta": meta}))
    return out


# --------------------------------------------------------------------------------------------
# The result of a load
# --------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    corpus: str
    split: str | None
    source: str | None
    taxonomy: str | None
    records: list[Record] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def with_weak_vad(self, lexicon: Any = None, label_weight: float = 0.5, progress: bool = False) -> list[Record]:
        """The records with lexicon-weak VAD targets filled in where no gold VAD is given."""
        from emoloom.lexicon import load_lexicon, with_weak_vad

        if lexicon is None or isinstance(lexicon, (str, Path)):
            lexicon = load_lexicon(None if lexicon is None else str(lexicon))
        records = self.records
        if progress:
            from tqdm import tqdm

            err = _stderr()
            tty = err.isatty()  # not a terminal (a log file): a line every 10 s, not every 0.1 s
            records = tqdm(records, desc="weak VAD", unit="rec", file=err, mininterval=0.1 if tty else 10.0)
        return [with_weak_vad(r, lexicon, label_weight=label_weight) for r in records]

    def stats(self, lexicon: Any = None, *, label_weight: float = 0.5, records_with_vad: list[Record] | None = None,
              progress: bool = False) -> dict[str, Any]:
        """One JSON-able summary: counts, label distribution, VAD sources, checksums, lexicon.

        `lexicon` is a Lexicon, a lexicon path, or None for the builtin lexicon; VAD sources are
        counted after lexicon-weak assignment (gold VAD is kept).
        """
        from emoloom.lexicon import load_lexicon

        if lexicon is None or isinstance(lexicon, (str, Path)):
            lexicon = load_lexicon(None if lexicon is None else str(lexicon))
        if records_with_vad is None:
            records_with_vad = self.with_weak_vad(lexicon, label_weight=label_weight, progress=progress)

        labels: Counter[str] = Counter()
        taxonomies: Counter[str] = Counter()
        splits: Counter[str] = Counter()
        multi = unlabelled = with_context = 0
        words = []
        for r in self.records:
            labels.update(r.labels)
            taxonomies[r.taxonomy] += 1
            splits[r.split] += 1
            multi += len(r.labels) > 1
            unlabelled += not r.labels
            with_context += bool(r.context)
            words.append(len(r.text.split()))
        # Label order: the taxonomy's order (zeros included), then any other label seen.
        order: list[str] = []
        for tax in ([self.taxonomy] if self.taxonomy in TAXONOMIES else []) + sorted(taxonomies):
            order += [l for l in TAXONOMIES[tax] if l not in order]
        order += sorted(l for l in labels if l not in order)

        vad_source: Counter[str] = Counter(dict.fromkeys(get_args(VadSource), 0))  # zeros shown too
        sums = [0.0, 0.0, 0.0]
        n_vad = 0
        for r in records_with_vad:
            vad_source[r.vad_source] += 1
            if r.vad is not None:
                n_vad += 1
                for i, x in enumerate(r.vad.as_tuple()):
                    sums[i] += x
        return {
            "corpus": self.corpus,
            "split": self.split,
            "source": self.source,
            "taxonomy": self.taxonomy,
            "records": len(self.records),
            "skipped": len(self.skipped),
            "labels": {l: labels[l] for l in order},
            "multi_label": multi,
            "unlabelled": unlabelled,
            "with_context": with_context,
            "splits": dict(splits),
            "text_words": {
                "mean": round(sum(words) / len(words), 2) if words else 0.0,
                "max": max(words, default=0),
            },
            "vad_source": dict(vad_source),
            "vad_mean": (
                {k: round(s / n_vad, 4) for k, s in zip("vad", sums)} if n_vad else None
            ),
            "sha256": dict(self.files),
            "lexicon": {"name": getattr(lexicon, "name", None), "sha256": getattr(lexicon, "sha256", None)},
        }


def _stderr():
    import sys

    return sys.stderr
