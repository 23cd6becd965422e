"""The corpus registry: name -> reader. A reader takes (source, split, report, options) and
returns records; `load_corpus` (in `emoloom.data`) wraps it with hub dispatch and projection."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Callable

from emoloom.contract import Record

from . import dailydialog, empathetic, goemotions, jsonl, synthetic
from .base import Report


@dataclass(frozen=True)
class Options:
    limit: int | None = None
    taxonomy: str | None = None
    context_turns: int = dailydialog.DEFAULT_CONTEXT_TURNS


Reader = Callable[[object, "str | None", Report, Options], list[Record]]


def _goemotions(source, split, report: Report, opt: Options) -> list[Record]:
    return goemotions.read_tsv(source, split, report, opt.limit)


def _empathetic(source, split, report: Report, opt: Options) -> list[Record]:
    return empathetic.read_csv(source, split, report, opt.limit)


def _dailydialog(source, split, report: Report, opt: Options) -> list[Record]:
    return dailydialog.read_split(source, split, report, opt.limit, context_turns=opt.context_turns)


def _jsonl(source, split, report: Report, opt: Options) -> list[Record]:
    return jsonl.read_jsonl(source, split, report, opt.limit, taxonomy=opt.taxonomy)


def _synthetic(source, split, report: Report, opt: Options) -> list[Record]:
    """A folder written by `data synth`, read through the real reader of the chosen taxonomy
    (default goemotions). Without a source, a default-size corpus (seed 0) is generated first."""
    tax = opt.taxonomy or "goemotions"
    if tax not in synthetic.LABELS:
        raise ValueError(f"synthetic: --taxonomy must be one of {', '.join(synthetic.LABELS)}, got {tax!r}")
    if source is None:
        with tempfile.TemporaryDirectory(prefix="emoloom-synth-") as tmp:
            synthetic.write_synthetic(tmp)
            return _synthetic(tmp, split, report, opt)
    root = synthetic.root_of(source)
    inner = Options(limit=opt.limit, taxonomy=None, context_turns=opt.context_turns)
    records = READERS[tax](root / tax, split or "train", report, inner)
    for r in records:
        r.corpus = "synthetic"
    return records


READERS: dict[str, Reader] = {
    "goemotions": _goemotions,
    "empathetic": _empathetic,
    "dailydialog": _dailydialog,
    "jsonl": _jsonl,
    "synthetic": _synthetic,
}

# The taxonomy of each corpus's records (None: given per record / by the caller).
NATIVE = {"goemotions": "goemotions", "empathetic": "empathetic", "dailydialog": "dailydialog",
          "jsonl": None, "synthetic": None}
HUB_CORPORA = ("goemotions", "empathetic", "dailydialog")


def corpora() -> tuple[str, ...]:
    return tuple(READERS)
