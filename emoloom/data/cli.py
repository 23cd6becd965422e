"""`python -m emoloom data {stats,prepare,synth}`.

    data stats   --corpus C --source S --split NAME [--lexicon PATH] [--strict] [--taxonomy T]
                 one JSON object on stdout; skipped-row reasons on stderr (first 20 + a count)
    data prepare ... --out records.jsonl
                 records with lexicon-weak VAD targets as JSONL; a summary on stderr
    data synth   --out DIR [--seed N] [--size N]
                 the synthetic corpora in the original file formats

Exit status: 0 ok, 1 bad input (missing file, bad row under --strict, hub offline), 2 usage.
Input records holding a lone surrogate (a broken \\ud800 escape in JSONL: no valid Unicode text)
are reported as file:line and skipped, not repaired. Output files are written atomically: a
failed run leaves an existing --out file as it was.
"""
from __future__ import annotations

import argparse
import json
import sys

CORPORA = ("goemotions", "empathetic", "dailydialog", "jsonl", "synthetic")
MAX_REASONS = 20
PROGRESS_MIN_RECORDS = 10_000


def register(subparsers) -> argparse.ArgumentParser:
    data = subparsers.add_parser("data", help="read corpora: stats, prepare JSONL, synthetic data",
                                 description="Read, check and convert the emotion corpora.")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    def corpus_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--corpus", required=True, choices=CORPORA)
        p.add_argument("--source", default=None,
                       help="file or folder, or a Hugging Face Hub id (owner/name); "
                            "synthetic: a folder from `data synth` (generated on the fly when omitted)")
        p.add_argument("--split", default=None, help="train, dev/validation/valid or test")
        p.add_argument("--lexicon", default=None, help="VAD lexicon file (NRC-VAD TSV or Warriner CSV); default builtin")
        p.add_argument("--strict", action="store_true", help="fail at the first bad row instead of skipping it")
        p.add_argument("--taxonomy", default=None,
                       help="jsonl: taxonomy of records that carry none (default goemotions); synthetic: "
                            "which sub-corpus; others: their own or 'ekman' (projected)")
        p.add_argument("--limit", type=non_negative_int, default=None, help="read at most N records (0: none)")
        p.add_argument("--context-turns", type=int, default=5, help="DailyDialog: previous turns kept as context")
        p.add_argument("--label-weight", type=float, default=0.5,
                       help="weight of the label VAD anchor in the lexicon-weak VAD target")

    p = sub.add_parser("stats", help="print one JSON object of corpus statistics")
    corpus_args(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("prepare", help="write records with lexicon-weak VAD targets as JSONL",
                       description="Write records with lexicon-weak VAD targets as JSONL. Records "
                                   "whose text holds a lone surrogate (a broken \\ud800 escape) "
                                   "are reported as file:line and skipped, not repaired; the output "
                                   "is written atomically (an existing file survives a failed run).")
    corpus_args(p)
    p.add_argument("--out", required=True, help="output .jsonl path (a file, not a folder)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("synth", help="write the synthetic corpora (original file formats)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=None, help="train examples per corpus (default 2000)")
    p.set_defaults(func=cmd_synth)
    return data


def non_negative_int(text: str) -> int:
    """argparse type of --limit: 0 reads no records; a negative count is a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 reads no records), got {value}")
    return value


def _load(args):
    from emoloom.data import load_corpus

    if args.source is None and args.corpus != "synthetic":
        raise FileNotFoundError(f"{args.corpus}: --source is required (a file, folder or hub id)")
    return load_corpus(args.corpus, args.source, args.split, strict=args.strict, taxonomy=args.taxonomy,
                       limit=args.limit, context_turns=args.context_turns)


def _report_skipped(skipped: list[str]) -> None:
    for reason in skipped[:MAX_REASONS]:
        print(f"skipped {reason}", file=sys.stderr)
    if len(skipped) > MAX_REASONS:
        print(f"... and {len(skipped) - MAX_REASONS} more skipped rows", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} bad row(s) skipped", file=sys.stderr)


def _progress(n: int) -> bool:
    return sys.stderr.isatty() or n > PROGRESS_MIN_RECORDS


def _run(fn, args) -> int:
    from emoloom.data.base import BadRowError, HubOfflineError

    try:
        return fn(args)
    except (BadRowError, HubOfflineError, OSError, ValueError) as exc:  # OSError: the message names the path
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_stats(args) -> int:
    return _run(_stats, args)


def cmd_prepare(args) -> int:
    return _run(_prepare, args)


def cmd_synth(args) -> int:
    return _run(_synth, args)


def _lexicon(args):
    from emoloom.lexicon import load_lexicon

    try:
        return load_lexicon(args.lexicon)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--lexicon: {exc}") from None


def _stats(args) -> int:
    lexicon = _lexicon(args)
    res = _load(args)
    _report_skipped(res.skipped)
    stats = res.stats(lexicon, label_weight=args.label_weight, progress=_progress(len(res.records)))
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    return 0


def _prepare(args) -> int:
    from pathlib import Path

    from emoloom.data.jsonl import write_jsonl

    if Path(args.out).is_dir():  # before any reading: fail in a second, not after the corpus
        raise ValueError(f"--out {args.out} is a folder; give a file path such as {Path(args.out) / 'records.jsonl'}")
    lexicon = _lexicon(args)
    res = _load(args)
    _report_skipped(res.skipped)
    records = res.with_weak_vad(lexicon, label_weight=args.label_weight, progress=_progress(len(res.records)))
    out = write_jsonl(records, Path(args.out))
    stats = res.stats(lexicon, records_with_vad=records)
    summary = {k: stats[k] for k in ("corpus", "split", "taxonomy", "records", "skipped", "vad_source", "lexicon")}
    print(f"wrote {len(records)} records to {out}: {json.dumps(summary)}", file=sys.stderr)
    return 0


def _synth(args) -> int:
    from emoloom.data import write_synthetic

    if args.size is not None and args.size < 1:
        raise ValueError(f"--size must be >= 1, got {args.size}")
    try:
        files = write_synthetic(args.out, seed=args.seed, size=args.size)
    except ValueError as exc:
        raise ValueError(f"--out: {exc}") from None
    for key, path in files.items():
        print(f"{key}\t{path}", file=sys.stderr)
    print(json.dumps({k: str(v) for k, v in files.items()}, indent=2))
    return 0
