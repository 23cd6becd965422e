"""The screen end to end: real Ray Tune + Optuna + ASHA, real training and KV-off evaluation of
built-in tiny models, a real sqlite MLflow store (and a real MLflow server for the outage).
Sized small; each run takes about a minute."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from emoloom import tracking

pytestmark = pytest.mark.slow

SMALL = """
metric: objective
mode: max
num_trials: {trials}
max_concurrent: 2
seed: 0
asha: {{enabled: true, time_attr: epoch, max_t: 2, grace_period: 1, reduction_factor: 2}}
fixed:
  epochs: 2
  steps_per_epoch: {steps}
  data.synthetic_size: 300
  data.dev_size: 16
params:
  model.name: {{type: categorical, choices: {models}}}
  optim.lr: {{type: float, low: 0.001, high: 0.01, log: true}}
baselines: {baselines}
"""


def screen_cmd(tmp_path, space_text, *extra):
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    return [sys.executable, "-m", "emoloom.screen", f"space={space}", f"storage={tmp_path / 'runs'}",
            "name=t", "eval.dev_limit=8", "eval.epoch_limit=4", "eval.max_new_tokens=64",
            "eval.cross_corpus=[{corpus: synthetic, taxonomy: dailydialog, split: validation, limit: 8}]",
            "ray.num_cpus=2", *extra]


def mlflow_runs(tmp_path, uri=None):
    c = tracking.client(uri or tracking.default_tracking_uri(tmp_path / "runs"))
    exp = c.get_experiment_by_name("emoloom-screen")
    runs = c.search_runs([exp.experiment_id], max_results=100) if exp else []
    parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    children = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    return c, parents, children


def test_a_failing_trial_is_recorded_and_the_screen_goes_on(tmp_path):
    text = SMALL.format(trials=2, steps=4, models="[tiny-qwen2, no-such/model]",
                        baselines="[{model.name: tiny-qwen2, optim.lr: 0.005}, {model.name: no-such/model, optim.lr: 0.005}]")
    proc = subprocess.run(screen_cmd(tmp_path, text), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Best candidate: trial" in proc.stdout and "mlflow ui --backend-store-uri sqlite:///" in proc.stdout
    c, parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    by_model = {r.data.params["model.name"]: r for r in children}
    failed = by_model["no-such/model"]
    assert failed.info.status == "FAILED" and "HF_HUB_OFFLINE" in failed.data.tags["emoloom.failure"]
    good = by_model["tiny-qwen2"]
    assert good.info.status == "FINISHED"
    for key in ("objective", "dev.macro_f1", "dev.parse_ok_rate", "dev.vad_1mrmse", "cross.ekman_macro_f1",
                "train_seconds"):
        assert key in good.data.metrics, key
    assert {"emoloom.config_hash", "emoloom.git_commit"} <= set(parents[0].data.tags)
    assert {"emoloom.base_model", "emoloom.data_sha256", "emoloom.version.torch"} <= set(good.data.tags)
    artifacts = {f.path for f in c.list_artifacts(good.info.run_id)}
    assert {"dev", "adapter", "config.yaml", "metrics.json"} <= artifacts
    report = {f.path for f in c.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/leaderboard.md", "report/leaderboard.csv", "report/f1_vs_train_seconds.png"} <= report
    board = (next((tmp_path / "runs").glob("t-*")) / "report" / "leaderboard.csv").read_text()
    assert "FAILED" in board.splitlines()[-1]
    assert "\x1b[" not in failed.data.tags["emoloom.failure"]  # plain text, no terminal colours
    version = c.get_model_version_by_alias("emoloom-best", "best")
    assert version.run_id == good.info.run_id

    # The same command again: the finished screen is reported, not rerun or rewritten.
    summary = next((tmp_path / "runs").glob("t-*/summary.json"))
    before = summary.read_text()
    again = subprocess.run(screen_cmd(tmp_path, text), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already finished" in again.stderr and "Best candidate: trial" in again.stdout
    assert json.loads(summary.read_text())["wall_s"] == json.loads(before)["wall_s"]
    assert len(c.search_model_versions("name = 'emoloom-best'")) == 1
    _, parents_again, children_again = mlflow_runs(tmp_path)
    assert [r.info.end_time for r in parents_again] == [parents[0].info.end_time]
    assert len(children_again) == 2


def journal_states(tmp_path):
    return [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("t-*/trials/trial_*/journal.json")]


def test_sigkill_of_the_driver_then_resume_keeps_finished_trials(tmp_path):
    text = SMALL.format(trials=3, steps=6, models="[tiny-qwen2, tiny-llama]", baselines="[]")
    cmd = screen_cmd(tmp_path, text, "mlflow.registered_model=null")
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 400
    try:
        # Kill while one trial has finished and another is known to be training (its journal
        # holds its params and no end).
        while time.time() < deadline and driver.poll() is None:
            time.sleep(0.5)
            states = journal_states(tmp_path)
            if (any(s["view"]["status"] == "FINISHED" for s in states)
                    and any(s["view"]["status"] == "RUNNING" and s["view"]["params"] for s in states)):
                break
        else:
            pytest.fail("no moment with a finished trial and one in flight before the deadline")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    _, _, children = mlflow_runs(tmp_path)
    finished_before = [r for r in children if r.info.status == "FINISHED"]
    in_flight = [r for r in children if r.info.status == "RUNNING"]
    assert finished_before and in_flight
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming screen" in proc.stderr
    _, parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    keys = [r.data.tags[tracking.TRIAL_TAG] for r in children]
    assert len(keys) == len(set(keys))  # no duplicated trial runs
    after = {r.info.run_id: r for r in children}
    for run in finished_before:  # kept, not rerun
        assert after[run.info.run_id].info.status == "FINISHED"
        assert after[run.info.run_id].info.end_time == run.info.end_time
    for run in in_flight:  # continued under its own run, or closed with a reason: never left open
        again = after[run.info.run_id]
        assert again.info.status in ("FINISHED", "KILLED"), again.info.status
        if again.info.status == "KILLED":
            assert again.data.tags["emoloom.status"] in ("INTERRUPTED", "STOPPED")
            assert again.data.tags["emoloom.failure"]
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)
    # The leaderboard: the space's 3 trials, each sampled configuration once.
    board = (next((tmp_path / "runs").glob("t-*")) / "report" / "leaderboard.csv").read_text().splitlines()
    assert len(board) == 1 + 3, board
    ranked = [r for r in children if r.data.tags.get("emoloom.status") != "INTERRUPTED"]
    configs = [(r.data.params["model.name"], r.data.params["optim.lr"]) for r in ranked]
    assert len(configs) == len(set(configs)) == 3


def test_an_mlflow_outage_loses_no_trial_and_a_rerun_replays_it(tmp_path, mlflow_server):
    server = mlflow_server
    text = SMALL.format(trials=2, steps=4, models="[tiny-qwen2]", baselines="[]")
    cmd = screen_cmd(tmp_path, text, f"mlflow.tracking_uri={server.uri}")
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and driver.poll() is None:  # the outage starts with a trial done
            time.sleep(0.5)
            if any(s["view"]["status"] == "FINISHED" for s in journal_states(tmp_path)):
                break
        server.stop()
        out, err = driver.communicate(timeout=600)
        assert driver.returncode == 0, out[-3000:] + err[-3000:]
        assert "MLflow did not take everything" in out and "Best candidate: trial" in out
        assert "Traceback" not in err
        states = journal_states(tmp_path)
        assert len(states) == 2 and all(s["view"]["status"] in ("FINISHED", "KILLED") for s in states)
        assert any(s["last_error"] for s in states)

        server.start()  # the outage ends; the same command replays what MLflow missed
        again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "already finished" in again.stderr and "MLflow did not take" not in again.stdout
        c, parents, children = mlflow_runs(tmp_path, server.uri)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert sorted(r.info.status for r in children) == sorted(
            {"FINISHED": "FINISHED", "KILLED": "KILLED"}[s["view"]["status"]] for s in states)
        for r in children:
            if r.info.status == "FINISHED":
                assert "objective" in r.data.metrics and "dev.macro_f1" in r.data.metrics
        assert {f.path for f in c.list_artifacts(parents[0].info.run_id, "report")} >= {"report/leaderboard.md"}
        assert c.get_model_version_by_alias("emoloom-best", "best").run_id in {r.info.run_id for r in children}
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
