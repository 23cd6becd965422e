"""The screen end to end: real Ray Tune + Optuna + ASHA, real training and KV-off evaluation of
built-in tiny models, a real sqlite MLflow store. Sized small; each run takes about a minute."""
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


def mlflow_runs(tmp_path):
    c = tracking.client(tracking.default_tracking_uri(tmp_path / "runs"))
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
    version = c.get_model_version_by_alias("emoloom-best", "best")
    assert version.run_id == good.info.run_id


def test_sigkill_of_the_driver_then_resume_keeps_finished_trials(tmp_path):
    text = SMALL.format(trials=3, steps=6, models="[tiny-qwen2, tiny-llama]", baselines="[]")
    cmd = screen_cmd(tmp_path, text, "mlflow.registered_model=null")
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 400
    finished_before = []
    try:
        while time.time() < deadline and driver.poll() is None:
            time.sleep(2)
            # Look at MLflow only once a trial has evaluated (its tables exist by then: opening
            # the store while the driver creates it races MLflow's schema migration).
            if list((tmp_path / "runs").glob("t-*/trials/trial_*/dev/metrics.json")):
                _, _, children = mlflow_runs(tmp_path)
                finished_before = [r for r in children if r.info.status == "FINISHED"]
                if finished_before:
                    break
        assert finished_before, "no trial finished before the deadline"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming screen" in proc.stderr
    _, parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1
    keys = [r.data.tags[tracking.TRIAL_TAG] for r in children]
    assert len(keys) == len(set(keys)) == 3  # no duplicated trial runs
    after = {r.info.run_id: r for r in children}
    for run in finished_before:  # kept, not rerun
        assert after[run.info.run_id].info.status == "FINISHED"
        assert after[run.info.run_id].info.end_time == run.info.end_time
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)
