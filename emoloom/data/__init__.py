"""Corpus readers: GoEmotions, EmpatheticDialogues, DailyDialog, contract JSONL, synthetic.

One entry point::

    from emoloom.data import load_corpus
    res = load_corpus("goemotions", "/path/to/goemotions", "dev")
    res.records        # list[Record]
    res.skipped        # ["file:line: reason", ...] of the bad rows that were skipped
    res.files          # {input file: sha256}
    res.stats()        # JSON-able summary (labels, VAD sources after lexicon-weak VAD, checksums)

A source is a local path or a Hugging Face Hub dataset id (``owner/name``, not an existing path).
Hub sources fail at once when HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1.
"""
from __future__ import annotations

from pathlib import Path

from emoloom.labels import taxonomy as taxonomy_labels

from .base import BadRowError, HubOfflineError, LoadResult, Report, is_hub_id, project
from .registry import HUB_CORPORA, NATIVE, READERS, Options, corpora

__all__ = [
    "BadRowError", "HubOfflineError", "LoadResult", "corpora", "is_hub_id", "load_corpus",
    "write_synthetic", "synthetic_records",
]


def load_corpus(corpus: str, source: str | Path | None, split: str | None = None, *, strict: bool = False,
                taxonomy: str | None = None, limit: int | None = None, context_turns: int = 5) -> LoadResult:
    """Read one split of a corpus into contract `Record`s.

    corpus:   goemotions | empathetic | dailydialog | jsonl | synthetic
    source:   a file or folder (see each reader), or a hub id for the first three
    split:    train / dev / test (validation and valid are accepted as aliases of dev files)
    strict:   raise BadRowError ("file:line: reason") at the first bad row instead of skipping it
    taxonomy: jsonl: taxonomy of records that carry none (default goemotions); synthetic: which
              sub-corpus (goemotions, empathetic, dailydialog); other corpora: their own taxonomy
              or "ekman" (labels projected with `labels.to_ekman`)
    limit:    stop after this many records
    context_turns: DailyDialog: previous turns kept as context (the last N; 0 for none)
    """
    if corpus not in READERS:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of {', '.join(READERS)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if context_turns < 0:
        raise ValueError(f"context_turns must be >= 0, got {context_turns}")
    native = NATIVE[corpus]
    if taxonomy is not None:
        taxonomy_labels(taxonomy)  # ValueError for an unknown name
        if native is not None and taxonomy not in (native, "ekman"):
            raise ValueError(f"corpus {corpus!r} has taxonomy {native!r}; --taxonomy may be {native!r} "
                             f"or 'ekman' (projected), not {taxonomy!r}")
    read_taxonomy = taxonomy if native is None else None
    report = Report(strict=strict)
    opt = Options(limit=limit, taxonomy=read_taxonomy, context_turns=context_turns)

    if corpus in HUB_CORPORA and is_hub_id(source):
        from .hub import read_hub

        records = read_hub(corpus, str(source), split, report, limit, context_turns=context_turns)
    else:
        records = READERS[corpus](source, split, report, opt)

    if native is not None and taxonomy is not None and taxonomy != native:
        records = project(records, taxonomy)
    if corpus == "jsonl":
        result_taxonomy = _only_taxonomy(records) or taxonomy or "goemotions"
    elif corpus == "synthetic":
        result_taxonomy = taxonomy or "goemotions"
    else:
        result_taxonomy = taxonomy or native
    return LoadResult(
        corpus=corpus, split=split, source=None if source is None else str(source), taxonomy=result_taxonomy,
        records=records, skipped=report.skipped, files=report.files,
    )


def _only_taxonomy(records) -> str | None:
    taxonomies = {r.taxonomy for r in records}
    return taxonomies.pop() if len(taxonomies) == 1 else None


def write_synthetic(out_dir, seed: int = 0, size: int | None = None):
    """See `emoloom.data.synthetic.write_synthetic`."""
    from .synthetic import DEFAULT_SIZE, write_synthetic as _write

    return _write(out_dir, seed=seed, size=DEFAULT_SIZE if size is None else size)


def synthetic_records(taxonomy: str, n: int, seed: int = 0, split: str = "train"):
    """See `emoloom.data.synthetic.synthetic_records`."""
    from .synthetic import synthetic_records as _records

    return _records(taxonomy, n, seed=seed, split=split)
