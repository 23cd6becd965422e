"""The screen end to end: real Ray Tune + Optuna + ASHA, real training and KV-off evaluation of
built-in tiny models, a real sqlite MLflow store (and a real MLflow server for the outage).
Sized small; each run takes about a minute."""
import json
import math
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


def trial_runs(runs):
    return [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "trial"]


VERDICT = """
metric: objective
mode: max
num_trials: 4
max_concurrent: 2
seed: 0
asha: {enabled: false, time_attr: epoch, max_t: 2, grace_period: 1, reduction_factor: 2}
fixed: {epochs: 2, data.synthetic_size: 300, data.dev_size: 16}
params:
  model.name: {type: categorical, choices: [tiny-llama, no-such/model]}
  optim.lr: {type: categorical, choices: [0.0, 0.003]}
  steps_per_epoch: {type: categorical, choices: [4, 80]}
baselines:  # a working candidate twice, an untrained control (lr=0), a model that cannot load
  - {model.name: tiny-llama, optim.lr: 0.003, steps_per_epoch: 80}
  - {model.name: tiny-llama, optim.lr: 0.003, steps_per_epoch: 80}
  - {model.name: tiny-llama, optim.lr: 0.0, steps_per_epoch: 4}
  - {model.name: no-such/model, optim.lr: 0.003, steps_per_epoch: 4}
"""


def test_a_screen_qualifies_its_ranking_and_a_failing_trial_does_not_stop_it(tmp_path):
    cmd = screen_cmd(tmp_path, VERDICT, "eval.dev_limit=60", "eval.epoch_limit=8")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Best candidate: trial" in proc.stdout and "mlflow ui --backend-store-uri sqlite:///" in proc.stdout
    # the summary ends with the exact `mlflow ui` of this environment and the experiment's runs page
    # (Ray's log lines from trial processes can still arrive after them: look the lines up)
    lines = proc.stdout.strip().splitlines()
    at = max(i for i, line in enumerate(lines) if line.startswith("Open in MLflow: "))
    last = lines[at:at + 2]
    assert last[0].startswith("Open in MLflow: ") and "--host 127.0.0.1" in last[0]
    assert last[0].split()[3] in ("mlflow", os.path.relpath(os.path.join(os.path.dirname(sys.executable), "mlflow")),
                                  os.path.join(os.path.dirname(sys.executable), "mlflow"))
    assert last[1].startswith("Runs of the screen: http://127.0.0.1:5000/#/experiments/") and "/runs" in last[1]
    exp_dir = next((tmp_path / "runs").glob("t-*"))
    c, parents, children = mlflow_runs(tmp_path)
    parent = parents[0]
    trials = [r for r in children if r.data.tags[tracking.ROLE_TAG] == "trial"]
    floors = {r.data.params["model.name"]: r for r in children if r.data.tags[tracking.ROLE_TAG] == "floor"}
    assert len(parents) == 1 and len(trials) == 4 and set(floors) == {"majority", "tfidf_lr"}

    # The MLflow UI tells the story: runs view, named trials, the leaderboard as the Description.
    assert c.get_experiment_by_name("emoloom-screen").tags["mlflow.experimentKind"] == "custom_model_development"
    names = sorted(r.info.run_name for r in trials)
    assert all(n.startswith(("tiny-llama lr=", "no-such/model lr=")) and " spe=" in n and " #" in n for n in names), names
    note = parent.data.tags["mlflow.note.content"]
    assert "| rank |" in note and "Ranks 1 and 2 are not separated" in note and "**Best**: trial" in note
    assert not any("step" in r.data.metrics for r in trials)

    # A trial that cannot load its model fails with the original error in plain text; the rest go on.
    failed = [r for r in trials if r.data.params["model.name"] == "no-such/model"][0]
    assert failed.info.status == "FAILED" and "HF_HUB_OFFLINE" in failed.data.tags["emoloom.failure"]
    assert "\x1b[" not in failed.data.tags["emoloom.failure"]
    good = [r for r in trials if r.data.params["optim.lr"] == "0.003" and r.info.status == "FINISHED"]
    control = [r for r in trials if r.data.params["optim.lr"] == "0.0"][0]
    assert len(good) == 2 and control.info.status == "FINISHED"
    for key in ("objective", "dev.macro_f1", "dev.parse_ok_rate", "dev.vad_1mrmse", "cross.ekman_macro_f1",
                "train_seconds", "epoch_eval_seconds", "objective_ci_low", "objective_ci_high"):
        assert key in good[0].data.metrics, key
    assert {"emoloom.base_model", "emoloom.data_sha256", "emoloom.version.torch"} <= set(good[0].data.tags)
    assert {"dev", "adapter", "config.yaml", "metrics.json"} <= {f.path for f in c.list_artifacts(good[0].info.run_id)}

    # Before its first step every trial logged what its base model brings (zero-shot, at step 0),
    # measured once per base model: the three tiny-llama trials share one cached measurement.
    history = c.get_metric_history(good[0].info.run_id, "zero_shot.nll")
    assert [m.step for m in history] == [0] and math.isfinite(history[0].value)
    assert {r.data.metrics["zero_shot.nll"] for r in [*good, control]} == {history[0].value}
    assert {"zero_shot.decoded", "zero_shot.parse_ok_rate"} <= set(control.data.metrics)
    assert len(list((exp_dir / "zero_shot").glob("*.json"))) == 1
    assert good[0].data.tags["emoloom.base_revision"].startswith("tiny-llama-")
    assert (good[0].data.tags["emoloom.train_precision"], good[0].data.tags["emoloom.eval_dtype"]) == ("fp32", "float32")

    # Every trial and floor was scored on exactly the evaluation sample the screen saved.
    manifest = json.loads((exp_dir / "eval_sample.json").read_text())
    assert manifest["n"] == 60 and manifest["ids"]
    assert all(n >= 2 for n in manifest["label_counts"]["goemotions"].values())  # stratified: every label
    for folder in [*(exp_dir / "trials").glob("trial_*/dev"), *(exp_dir / "trials").glob("floor_*/dev")]:
        ids = [json.loads(line)["id"] for line in (folder / "predictions.jsonl").read_text().splitlines()]
        assert sorted(ids) == sorted(manifest["ids"]), folder

    # Identical candidates are tied; the untrained control is separated from them and below floor.
    for run in good:
        assert run.data.tags["emoloom.tied_with_best"] == "true"
    assert control.data.tags["emoloom.tied_with_best"] == "false"
    assert control.data.tags["emoloom.below_floor"] == "true"
    assert control.data.metrics["diff_to_best_ci_low"] > 0
    assert parent.data.metrics["tie_group_size"] == 2
    board = (exp_dir / "report" / "leaderboard.md").read_text()
    assert "Ranks 1 and 2 are not separated on 60 rows" in board and "TF-IDF floor: objective" in board
    assert "| floor-tfidf_lr | FLOOR | tfidf_lr |" in board
    version = c.get_model_version_by_alias("emoloom-best", "best")
    assert version.run_id in {r.info.run_id for r in good}
    assert version.tags["emoloom.separated_from_runner_up"] == "false"

    # The cost ledger adds up.
    ledger = json.loads((exp_dir / "report" / "ledger.json").read_text())
    assert ledger["totals"]["trials"] == 3  # the failed trial has no reliable time
    assert abs(ledger["totals"]["cpu_s"] - sum(t["cpu_s"] for t in ledger["trials"].values())) < 0.01
    assert "ledger.totals.cpu_s" in parent.data.metrics

    # The screen says where its time went: trials plus its own phases, within its wall time.
    summary = exp_dir / "summary.json"
    before = summary.read_text()
    phases = json.loads(before)["phases_s"]
    assert {"tracking_setup", "floors", "ray_setup", "trials", "report", "register"} <= set(phases)
    timed_before_the_summary = sum(v for k, v in phases.items() if k not in ("register", "tracking_finish"))
    assert phases["trials"] > 0 and timed_before_the_summary <= json.loads(before)["wall_s"] + 0.1

    # The same command again: the finished screen is reported, not rerun or rewritten.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already finished" in again.stderr and "Best candidate: trial" in again.stdout
    assert json.loads(summary.read_text())["wall_s"] == json.loads(before)["wall_s"]
    assert len(c.search_model_versions("name = 'emoloom-best'")) == 1
    _, parents_again, children_again = mlflow_runs(tmp_path)
    assert [r.info.end_time for r in parents_again] == [parent.info.end_time]
    assert len(children_again) == len(children)


def journal_states(tmp_path):
    return [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("t-*/trials/trial_*/journal.json")]


def test_sigkill_of_the_driver_then_resume_keeps_finished_trials(tmp_path):
    text = SMALL.format(trials=3, steps=6, models="[tiny-qwen2, tiny-llama]", baselines="[]")
    cmd = screen_cmd(tmp_path, text, "mlflow.registered_model=null")
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 400
    try:
        # Kill while one trial has finished and another is known to be training: MLflow holds
        # its run and params (its journal says so), and it has not ended.
        while time.time() < deadline and driver.poll() is None:
            time.sleep(0.5)
            states = journal_states(tmp_path)
            # (in flight: not past its first epoch, so it cannot finish in the moment before the kill)
            if (any(s["view"]["status"] == "FINISHED" for s in states)
                    and any(s["view"]["status"] == "RUNNING" and s["run_id"] and s["view"]["metrics"].get("epoch", 0) < 2
                            and any(op["op"] == "params" and op["done"] for op in s["ops"]) for s in states)):
                break
        else:
            pytest.fail("no moment with a finished trial and one in flight before the deadline")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    _, _, children = mlflow_runs(tmp_path)
    children = trial_runs(children)
    finished_before = [r for r in children if r.info.status == "FINISHED"]
    in_flight = [r for r in children if r.info.status == "RUNNING"]
    assert finished_before and in_flight
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming screen" in proc.stderr
    _, parents, children = mlflow_runs(tmp_path)
    children = trial_runs(children)
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
            assert again.data.tags["emoloom.status"] == "INTERRUPTED"
            assert again.data.tags["emoloom.failure"]
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)
    # The leaderboard: the space's 3 trials, each sampled configuration once.
    board = (next((tmp_path / "runs").glob("t-*")) / "report" / "leaderboard.csv").read_text().splitlines()
    assert len([line for line in board[1:] if ",FLOOR," not in line]) == 3, board
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
        # the trials may both have finished before the outage began; the screen's own run cannot have
        parent_state = json.loads(next((tmp_path / "runs").glob("t-*/journal.json")).read_text())
        assert any(s["last_error"] for s in [*states, parent_state])

        server.start()  # the outage ends; the same command replays what MLflow missed
        again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "already finished" in again.stderr and "MLflow did not take" not in again.stdout
        c, parents, children = mlflow_runs(tmp_path, server.uri)
        children = trial_runs(children)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert sorted(r.info.status for r in children) == sorted(
            {"FINISHED": "FINISHED", "KILLED": "KILLED"}[s["view"]["status"]] for s in states)
        for r in children:  # an ASHA-stopped trial's run ends FINISHED too, without a final evaluation
            if r.data.tags.get("emoloom.status") == "FINISHED":
                assert "objective" in r.data.metrics and "dev.macro_f1" in r.data.metrics
        assert {f.path for f in c.list_artifacts(parents[0].info.run_id, "report")} >= {"report/leaderboard.md"}
        assert c.get_model_version_by_alias("emoloom-best", "best").run_id in {r.info.run_id for r in children}
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
