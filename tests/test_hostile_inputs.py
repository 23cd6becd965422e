"""Hostile inputs (issue 30): each gets one clear line or a reason, never a traceback or a
quadratic stall. No test here starts Ray or trains a model."""
from __future__ import annotations

import io
import json
import shlex
import time
from argparse import Namespace
from pathlib import Path

import pytest
from pydantic import ValidationError

from emoloom.parse_cli import run as parse_cli_run

ANSWER = '{"labels":["joy"],"vad":{"v":0.5,"a":0.5,"d":0.5},"rationale":"x"}'


def parse_lines(lines: list[str]) -> tuple[int, list[dict], str]:
    out, err = io.StringIO(), io.StringIO()
    rc = parse_cli_run(Namespace(taxonomy="goemotions"), io.StringIO("\n".join(lines) + "\n"), out, err)
    return rc, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def dry_run(capsys, *argv: str) -> tuple[int, str, str]:
    """`python -m emoloom.screen --dry-run ARGV` in-process: (exit code, stdout, stderr)."""
    from emoloom.screen.__main__ import main

    rc = main(["--dry-run", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip()


# -- parse -----------------------------------------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("output", ["{" * 5_000_000, "{" * 2_500_000 + "}" * 2_500_000],
                         ids=["unmatched", "nested"])
def test_parse_of_millions_of_braces_takes_seconds_not_minutes(output):
    # the scan was quadratic: 800k unmatched "{" took 3.8 s here, 5M about 150 s
    line = json.dumps({"id": 1, "output": output})
    started = time.perf_counter()
    rc, rows, err = parse_lines([line, json.dumps({"id": 2, "output": ANSWER})])
    elapsed = time.perf_counter() - started
    assert rc == 0 and [r["id"] for r in rows] == [1, 2] and rows[1]["parse_ok"], err
    # nested: the innermost "{}" is the only object that looks like JSON
    assert rows[0]["error"] == ("unbalanced" if output.endswith("{") else "missing_field")
    assert elapsed < 30, f"{len(output)} characters parsed in {elapsed:.1f} s"


def test_a_line_nested_100k_deep_gets_a_reason_and_the_other_lines_parse():
    n = 100_000
    lines = [
        json.dumps({"id": 1, "output": ANSWER}),
        '{"id": 2, "output": ' + "[" * n + "]" * n + "}",  # the line itself too deep for json.loads
        json.dumps({"id": 3, "output": "[" * n + "]" * n}),  # the same as text: no JSON object in it
        json.dumps({"id": 4, "output": '{"a":' * n + "1" + "}" * n}),  # an answer too deep to read
        json.dumps({"id": 5, "output": ANSWER}),
    ]
    rc, rows, err = parse_lines(lines)
    assert rc == 1  # a malformed line, as for any other unreadable line
    assert "<stdin>:2: malformed input line: JSON nested too deep to read" in err
    assert "Traceback" not in err and len(err.splitlines()) == 2  # that line, then the summary
    assert [(r["id"], r["parse_ok"], r["error"]) for r in rows] == [
        (1, True, None), (3, False, "no_json"), (4, False, "invalid_json"), (5, True, None)]
    assert json.loads(err.splitlines()[-1])["malformed_lines"] == 1
