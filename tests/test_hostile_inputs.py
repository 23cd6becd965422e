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


# -- the screen's config -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "a/b", "/abs", "a\\b", ""])
def test_a_screen_name_is_one_path_component(capsys, tmp_path, name):
    rc, out, err = dry_run(capsys, f"name={name}", f"storage={tmp_path / 'inner'}")
    assert rc == 2 and out == "" and err.startswith("error: ") and "\n" not in err, err
    assert f"name: {name!r}: a screen name is one folder name" in err
    assert not any(tmp_path.iterdir())


def test_a_plain_screen_name_still_plans(capsys, tmp_path):
    rc, out, err = dry_run(capsys, "name=my-screen.v2", f"storage={tmp_path}")
    assert rc == 0 and json.loads(out)["config"]["name"] == "my-screen.v2", err


@pytest.mark.parametrize("override, message", [
    ("mlflow.experiment=", "mlflow.experiment: an MLflow experiment needs a name"),
    ("mlflow.experiment='  '", "mlflow.experiment: an MLflow experiment needs a name"),
    ("mlflow.registered_model=bad/name", "mlflow.registered_model: 'bad/name': MLflow model names cannot contain"),
    ("mlflow.registered_model=a:b", "mlflow.registered_model: 'a:b': MLflow model names cannot contain"),
    ("mlflow.registered_model=..", "mlflow.registered_model: '..': MLflow refuses model names"),
])
def test_mlflow_names_mlflow_refuses_are_refused_by_the_config(capsys, override, message):
    # the real run loads the config the same way, so it stops here too, before Ray or any training
    rc, out, err = dry_run(capsys, override)
    assert rc == 2 and out == "" and err.startswith("error: ") and "\n" not in err, err
    assert message in err, err


def test_mlflow_names_in_the_config_model_itself():
    from emoloom.screen.config import ScreenConfig

    with pytest.raises(ValidationError, match="needs a name"):
        ScreenConfig.model_validate({"mlflow": {"experiment": ""}})
    with pytest.raises(ValidationError, match="cannot contain '/'"):
        ScreenConfig.model_validate({"mlflow": {"registered_model": "bad/name"}})
    # null (and "", which run.py reads the same way) register nothing; a plain name is fine
    for ok in (None, "", "emoloom-best", "my model v2"):
        assert ScreenConfig.model_validate({"mlflow": {"registered_model": ok}}).mlflow.registered_model == ok


def test_storage_expands_variables_like_data_paths(capsys, tmp_path, monkeypatch):
    home = tmp_path / "my home"
    monkeypatch.setenv("HOME", str(home))
    rc, out, err = dry_run(capsys, "storage=${HOME}/x")
    assert rc == 0, err
    assert json.loads(out)["config"]["storage"] == f"{home}/x"
    rc, out, err = dry_run(capsys, "storage=${EMOLOOM_NO_SUCH_VAR_30}/x")
    assert rc == 2 and "storage: '${EMOLOOM_NO_SUCH_VAR_30}/x': environment variable EMOLOOM_NO_SUCH_VAR_30 is not set" \
        in err and "\n" not in err, err


def test_the_printed_mlflow_ui_command_is_quoted(tmp_path, capsys):
    from emoloom.screen.__main__ import print_summary

    uri = f"sqlite:///{tmp_path}/my dir/mlflow.db"
    print_summary({"report_dir": str(tmp_path), "best": None, "trials": 0, "failed": 0, "stopped_early": 0,
                   "wall_s": 1.0, "tracking_uri": uri, "experiment_id": "1", "parent_run_id": "r",
                   "storage": str(tmp_path)})
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("Open in MLflow: "))
    argv = shlex.split(line.removeprefix("Open in MLflow: "))
    assert argv[1:] == ["ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", "5000"]


# -- files a screen left behind ------------------------------------------------------------------

def test_a_truncated_floors_cache_is_refitted_and_said_so(tmp_path, capsys):
    from emoloom.data import synthetic_records
    from emoloom.screen.floors import compute_floors

    train = synthetic_records("goemotions", 120, seed=0, split="train")
    evals = {"dev": synthetic_records("goemotions", 30, seed=0, split="dev")}
    first = compute_floors(train, evals, tmp_path, bootstrap=0)
    path = Path(first["path"])
    whole = path.read_text()
    for broken in (whole[:500], "[]", json.dumps({"key": first["key"]})):  # cut short, not ours, incomplete
        path.write_text(broken)
        again = compute_floors(train, evals, tmp_path, bootstrap=0)
        assert again["cached"] is False and again["floors"] == first["floors"]
        assert f"warning: floors cache {path} is unreadable" in capsys.readouterr().err
        assert json.loads(path.read_text())["key"] == first["key"]  # written whole again
    assert compute_floors(train, evals, tmp_path, bootstrap=0)["cached"] is True
    assert capsys.readouterr().err == ""


def test_a_truncated_eval_sample_stops_the_audit_with_one_line(tmp_path, monkeypatch):
    import emoloom.journal
    import emoloom.report
    from emoloom import tracking
    from emoloom.screen.config import FidelityOptions, ScreenConfig
    from emoloom.screen.fidelity import audit
    from emoloom.screen.space import load_space

    exp = tmp_path / "t-abc"

    class Parent:  # the screen's journal, as RunJournal.load gives it
        run_id = "parent"
        state = {"key_tags": {tracking.SCREEN_TAG: "abc"}, "experiment_id": "1"}

    views = []
    for tid, objective in (("a", 0.7), ("b", 0.5)):
        (exp / "trials" / f"trial_{tid}" / "train").mkdir(parents=True)
        (exp / "trials" / f"trial_{tid}" / "train" / "config.yaml").write_text("epochs: 2\n")
        views.append({"run_id": tid, "run_name": tid, "status": "FINISHED", "metrics": {"objective": objective},
                      "tags": {tracking.TRIAL_TAG: tid}, "params": {}, "folder": str(exp / "trials" / tid)})
    monkeypatch.setattr(emoloom.journal.RunJournal, "load", classmethod(lambda cls, *a, **k: Parent()))
    monkeypatch.setattr(emoloom.report, "journal_views", lambda _dir: views)
    (exp / "eval_sample.json").write_text('{"n": 100, "sha256": "0123')  # cut short
    cfg = ScreenConfig(storage=str(tmp_path), mlflow={"tracking_uri": "sqlite:///unused.db"})
    with pytest.raises(SystemExit) as exc:
        audit(cfg, load_space("default"), exp, FidelityOptions(top=2, random=0, budget_x=1.5))
    message = str(exc.value.code)
    assert message.startswith(f"fidelity: {exp / 'eval_sample.json'}: cannot read the screen's evaluation sample")
    assert "\n" not in message
    assert not (exp / "fidelity").exists()  # stopped before it wrote or retrained anything


def test_report_out_an_existing_file_is_one_line(tmp_path, capsys):
    from emoloom import tracking
    from emoloom.__main__ import main
    from emoloom.journal import JOURNAL, RunJournal

    c = tracking.client(tracking.default_tracking_uri(tmp_path))
    exp_id = tracking.ensure_experiment(c, "emoloom-screen", tmp_path / "artifacts")
    parent = RunJournal(tmp_path / "j" / JOURNAL, uri=c.tracking_uri, experiment_id=exp_id, run_name="screen",
                        key_tags={tracking.SCREEN_TAG: "h1", tracking.ROLE_TAG: "screen"}, tags={})
    assert parent.sync()
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["report", "--experiment", "emoloom-screen", "--storage", str(tmp_path), "--out", str(target)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"error: {target}: a file is in the way"), err
    assert target.read_text() == "keep me\n"


# -- data ------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_corpus_file_is_one_line_not_every_row_skipped(tmp_path, capsys, encoding):
    from emoloom.__main__ import main

    rows = "".join(f"so happy today number {i}\t17\tid{i}\n" for i in range(50))
    path = tmp_path / "dev.tsv"
    path.write_text(rows, encoding=encoding)
    assert main(["data", "stats", "--corpus", "goemotions", "--source", str(path), "--split", "dev"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {path}: not UTF-8 (looks like UTF-16); save it as UTF-8 and read it again"
