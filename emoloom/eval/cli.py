"""`python -m emoloom evaluate` and `python -m emoloom predict`."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from emoloom.data.cli import non_negative_int
from emoloom.labels import TAXONOMIES

from .decoding import DECODERS, DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="built-in name (tiny-qwen2, ...), hub id or local folder")
    p.add_argument("--revision", default=None, help="hub revision of the model")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder (peft save_pretrained)")
    p.add_argument("--decoder", choices=DECODERS, default="fast",
                   help="reference: transformers generate(use_cache=False), one at a time; fast: the same "
                        "outputs, batched with skeleton drafts; constrained: taxonomy/VAD-masked greedy "
                        "(ParseOK 100%%); score: labels by likelihood, then constrained VAD (default: fast)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--device", default=None, help="e.g. cuda (default: CPU)")


def register(sub) -> None:
    ev = sub.add_parser(
        "evaluate", help="evaluate a candidate on a corpus split (predictions.jsonl + metrics.json)",
        description="KV-off greedy evaluation of a base model (+ LoRA adapter) under the JSON contract. "
                    "Writes OUT/predictions.jsonl and OUT/metrics.json; prints the headline metrics.",
    )
    _model_args(ev)
    ev.add_argument("--corpus", required=True, help="goemotions | empathetic | dailydialog | jsonl | synthetic")
    ev.add_argument("--source", default=None, help="file or folder of the corpus (or a hub id)")
    ev.add_argument("--split", default=None, help="train / dev / validation / test")
    ev.add_argument("--taxonomy", default=None, choices=list(TAXONOMIES),
                    help="jsonl: taxonomy of records without one; synthetic: which sub-corpus; 'ekman' projects")
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--actors", type=int, default=0, help="Ray actors (0: in-process, no Ray)")
    ev.add_argument("--limit", type=non_negative_int, default=None, help="evaluate the first N records (0: none)")
    ev.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ev.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the Macro-F1 CI")
    ev.add_argument("--shard-size", type=int, default=32)
    ev.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    ev.set_defaults(func=run_evaluate)

    pr = sub.add_parser(
        "predict", help="predict contract answers for JSONL records on stdin",
        description="Reads contract records as JSONL on stdin (only id and text required), writes one "
                    "prediction line per record on stdout: id, raw output, parse_ok, labels, vad, "
                    "rationale, error, truncated. Malformed input lines, and records whose text holds "
                    "a lone surrogate (a broken \\ud800 escape: no valid Unicode text, so it cannot be "
                    "tokenised), are reported on stderr as <stdin>:LINE and skipped, not repaired "
                    "(exit status 1); the other records are predicted.",
    )
    _model_args(pr)
    pr.add_argument("--taxonomy", default="goemotions", choices=list(TAXONOMIES),
                    help="taxonomy of records that carry none (default goemotions)")
    pr.set_defaults(func=run_predict)


def _spec(args):
    from emoloom.models import ModelSpec

    return ModelSpec(name=args.model, revision=args.revision)


def run_evaluate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from .run import EvalConfig, evaluate

    try:
        cfg = EvalConfig(model=_spec(args), adapter=args.adapter, corpus=args.corpus, source=args.source,
                         split=args.split, taxonomy=args.taxonomy, decoder=args.decoder, actors=args.actors,
                         batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, limit=args.limit,
                         out=args.out, seed=args.seed, shard_size=args.shard_size, bootstrap=args.bootstrap,
                         device=args.device, progress=not args.no_progress)
    except ValidationError as exc:
        print(f"evaluate: invalid arguments:\n{exc}", file=sys.stderr)
        return 2
    from emoloom.models import ModelUnavailable

    try:
        result = evaluate(cfg)
    except ModelUnavailable as exc:  # a missing model package or a bad GGUF file: bad input
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 1
    head = result["metrics"]["all"]
    summary = {
        "records": result["data"]["records"],
        "skipped": len(result["data"]["skipped"]),
        "parse_ok_rate": head["parse_ok_rate"],
        "macro_f1": head["ok_only"]["labels"]["macro_f1"],
        "macro_f1_all_rows": head["all_rows"]["labels"]["macro_f1"],
        "vad_one_minus_rmse": head["ok_only"]["vad"]["one_minus_rmse"],
        "forwards_per_example": result["forwards_per_example"],
        "failed_rows": result["failed_rows"],
        "wall_time_s": result["wall_time_s"],
        "parse_errors": head.get("parse_errors", {}),
        "out": args.out,
    }
    print(json.dumps(summary))
    for line in explain_metrics(head, Path(args.out) / "predictions.jsonl"):
        print(f"evaluate: {line}", file=sys.stderr)
    return 0


def other_taxonomy_labels(predictions: Path) -> dict[str, Counter]:
    """{record taxonomy -> Counter of taxonomies whose labels its unknown_label answers used}:
    a model trained on one corpus answers in that corpus's labels."""
    import ast

    from emoloom.labels import TAXONOMIES

    found: dict[str, Counter] = {}
    if not predictions.is_file():
        return found
    for line in predictions.read_text().splitlines():
        row = json.loads(line)
        if row.get("error") != "unknown_label" or "not in the taxonomy: " not in (row.get("detail") or ""):
            continue
        try:
            unknown = ast.literal_eval(row["detail"].split("not in the taxonomy: ", 1)[1])
        except (ValueError, SyntaxError):
            continue
        for name, labels in TAXONOMIES.items():
            if name != row.get("taxonomy") and unknown and all(l in labels for l in unknown):
                found.setdefault(row.get("taxonomy"), Counter())[name] += 1
    return found


def explain_metrics(head: dict, predictions: Path) -> list[str]:
    """Why ParseOK is low or Macro-F1 is null, in words: the parse failures by reason, and a model
    that answers in another taxonomy's labels."""
    lines = []
    n, rate = head.get("n") or 0, head.get("parse_ok_rate")
    errors = head.get("parse_errors") or {}
    if errors and (rate is None or rate < 1):
        counts = ", ".join(f"{k} {v}" for k, v in errors.items())
        lines.append(f"{round((1 - (rate or 0)) * n)} of {n} answers failed the contract: {counts} "
                     f"(reasons: README 'The JSON contract'; rows in predictions.jsonl, field error/detail)")
    for tax, other in other_taxonomy_labels(predictions).items():
        names = ", ".join(f"{k} ({v} answers)" for k, v in other.most_common())
        lines.append(f"the model answers {tax} records with labels of another taxonomy: {names}; was the adapter "
                     f"trained on that corpus? Evaluate it on records of that taxonomy")
    if head.get("ok_only", {}).get("labels", {}).get("macro_f1") is None:
        lines.append("macro_f1 is null: no ParseOK answer on a record with gold labels"
                     + ("" if n else " (no records)"))
    return lines


def run_predict(args: argparse.Namespace, stdin=None, stdout=None, stderr=None) -> int:
    from pydantic import ValidationError

    from emoloom.contract import Record, record_error

    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    records, bad = [], 0
    seen: set[str] = set()
    for lineno, line in enumerate(stdin, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            obj.setdefault("taxonomy", args.taxonomy)
            obj.setdefault("split", "predict")
            rec = Record.model_validate(obj)  # refuses lone surrogates, which no tokenizer takes
            if rec.id in seen:
                raise ValueError(f"duplicate id {rec.id!r}")
        except (ValueError, ValidationError) as exc:
            bad += 1
            msg = record_error(exc) if isinstance(exc, ValidationError) else str(exc).strip().replace("\n", " ")
            print(f"<stdin>:{lineno}: {msg[:300]}", file=stderr)
            continue
        seen.add(rec.id)
        records.append(rec)
    if records:
        from .predict import Predictor
        from .run import load_candidate

        try:
            candidate = load_candidate(_spec(args), args.adapter, device=args.device)
            rows = Predictor(candidate, args.decoder, args.max_new_tokens, args.batch_size).predict(records)
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            print(f"predict: {exc}", file=stderr)
            return 1
        keys = ("id", "raw", "parse_ok", "labels", "vad", "rationale", "error", "truncated")
        for row in rows:
            stdout.write(json.dumps({k: row[k] for k in keys}, ensure_ascii=False) + "\n")
        stdout.flush()
    return 1 if bad else 0
