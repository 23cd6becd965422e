"""`python -m emoloom parse`: apply the contract's parser to raw generations (JSONL on stdin)."""
from __future__ import annotations

import argparse
import json
import sys

from emoloom.labels import TAXONOMIES


def register(sub) -> None:
    p = sub.add_parser(
        "parse",
        help="parse raw generations under the JSON contract",
        description='Reads lines {"id": ..., "output": "<raw generation>"} on stdin, prints one parsed '
        "JSON line per input and the ParseOK rate on stderr. Malformed lines, and lines whose id or "
        "output holds a lone surrogate (e.g. a broken \\ud800 escape: no valid Unicode text), are "
        "reported on stderr as <stdin>:LINE and skipped, not repaired (exit status 1). An answer whose "
        "rationale decodes to a lone surrogate is not ParseOK (error bad_rationale).",
    )
    p.add_argument("--taxonomy", required=True, choices=[t for t in TAXONOMIES])
    p.set_defaults(func=run)


def run(args: argparse.Namespace, stdin=None, stdout=None, stderr=None) -> int:
    from emoloom.contract import lone_surrogate, parse_output

    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    total = ok = bad_lines = 0
    errors: dict[str, int] = {}
    for lineno, line in enumerate(stdin, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or "output" not in item:
                raise ValueError('expected an object with "id" and "output"')
            # Skipped, not repaired: a replaced character would make the parser judge a text the
            # model never wrote, and an id with one could not be written out as UTF-8.
            for key in ("id", "output"):
                value = item.get(key)
                why = lone_surrogate(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
                if why:
                    raise ValueError(f"{key}: {why} (not valid Unicode text)")
        except (ValueError, RecursionError) as exc:
            # RecursionError: nested deeper than Python's JSON reader goes; this line is reported,
            # the others still parse
            why = "JSON nested too deep to read" if isinstance(exc, RecursionError) else exc
            bad_lines += 1
            print(f"<stdin>:{lineno}: malformed input line: {why}", file=stderr)
            continue
        result = parse_output(item["output"], args.taxonomy)
        total += 1
        ok += result.parse_ok
        if result.error:
            errors[result.error] = errors.get(result.error, 0) + 1
        stdout.write(json.dumps({"id": item.get("id"), **result.row()}, ensure_ascii=False) + "\n")
    rate = ok / total if total else 0.0
    summary = {"parsed": total, "parse_ok": ok, "parse_ok_rate": round(rate, 4), "errors": errors,
               "malformed_lines": bad_lines}
    print(json.dumps(summary), file=stderr)
    return 1 if bad_lines else 0
