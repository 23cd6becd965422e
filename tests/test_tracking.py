"""MLflow bookkeeping and the report, against a real sqlite store and a real `mlflow server`."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from emoloom import tracking
from emoloom.report import build_report, pareto_front


@pytest.fixture()
def store(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    c = tracking.client(uri)
    return c, tracking.ensure_experiment(c, "exp", tmp_path / "artifacts"), tmp_path


def make_screen(c, exp_id, trials):
    parent, _ = tracking.start_or_resume(c, exp_id, "screen", tags={},
                                         key_tags={tracking.SCREEN_TAG: "h1", tracking.ROLE_TAG: "screen"})
    for name, status, metrics in trials:
        run, _ = tracking.start_or_resume(c, exp_id, name, tags={tracking.PARENT_TAG: parent.info.run_id},
                                          key_tags={tracking.SCREEN_TAG: "h1", tracking.ROLE_TAG: "trial",
                                                    tracking.TRIAL_TAG: name})
        tracking.log_params(c, run.info.run_id, {"model": {"name": "tiny-qwen2"}})
        tracking.log_metrics(c, run.info.run_id, metrics)
        tracking.finish(c, run.info.run_id, status, reason=None if status == "FINISHED" else "boom")
    return parent.info.run_id


def test_runs_are_found_again_by_their_tags_not_duplicated(store):
    c, exp_id, _ = store
    keys = {tracking.SCREEN_TAG: "abc", tracking.TRIAL_TAG: "t1"}
    first, resumed1 = tracking.start_or_resume(c, exp_id, "t1", tags={}, key_tags=keys)
    second, resumed2 = tracking.start_or_resume(c, exp_id, "t1", tags={}, key_tags=keys)
    assert (resumed1, resumed2) == (False, True)
    assert first.info.run_id == second.info.run_id
    assert len(c.search_runs([exp_id])) == 1


def test_a_resumed_screen_finds_its_parent_run_not_a_newer_trial_run(store):
    c, exp_id, _ = store
    parent = make_screen(c, exp_id, [("a", "FINISHED", {"objective": 0.5})])  # trial starts later
    again, resumed = tracking.start_or_resume(c, exp_id, "screen", tags={},
                                              key_tags={tracking.SCREEN_TAG: "h1", tracking.ROLE_TAG: "screen"})
    assert resumed and again.info.run_id == parent


def test_local_artifacts_go_where_the_experiment_says(store):
    c, exp_id, tmp = store
    assert c.get_experiment(exp_id).artifact_location == (tmp / "artifacts").resolve().as_uri()


def test_params_are_flattened_and_never_relogged_with_another_value(store):
    c, exp_id, _ = store
    run, _ = tracking.start_or_resume(c, exp_id, "r", tags={}, key_tags={tracking.TRIAL_TAG: "x"})
    tracking.log_params(c, run.info.run_id, {"optim": {"lr": 0.001}, "lora": {"r": 8}})
    tracking.log_params(c, run.info.run_id, {"optim": {"lr": 0.001}})  # same value: fine
    assert c.get_run(run.info.run_id).data.params == {"optim.lr": "0.001", "lora.r": "8"}
    with pytest.raises(ValueError, match="optim.lr"):
        tracking.log_params(c, run.info.run_id, {"optim": {"lr": 0.1}})


def test_report_ranks_finished_trials_and_lists_failed_ones_last(store):
    c, exp_id, tmp = store
    parent = make_screen(c, exp_id, [
        ("a", "FINISHED", {"objective": 0.4, "dev": {"macro_f1": 0.4}, "train_seconds": 10}),
        ("b", "FAILED", {}),
        ("c", "FINISHED", {"objective": 0.7, "dev": {"macro_f1": 0.7, "per_label_f1": {"joy": 0.9}},
                           "train_seconds": 30}),
    ])
    report = build_report(c, exp_id, parent, tmp / "report")
    assert [(r["trial"], r["status"]) for r in report["rows"]] == [("c", "FINISHED"), ("a", "FINISHED"), ("b", "FAILED")]
    assert report["rows"][2]["note"] == "boom"
    md = (tmp / "report" / "leaderboard.md").read_text()
    assert md.splitlines()[2].startswith("| 1 | c | FINISHED | tiny-qwen2 | 0.7000")
    for png in ("objective_per_trial.png", "f1_vs_train_seconds.png", "best_per_label_f1.png", "best_vad_scatter.png"):
        assert (tmp / "report" / png).read_bytes()[:4] == b"\x89PNG"


def test_pareto_front_keeps_only_undominated_points():
    # (seconds, f1): (20, 0.5) is dominated by (10, 0.6)
    assert pareto_front([(10, 0.6), (20, 0.5), (30, 0.8), (5, 0.2)]) == [0, 2, 3]


def test_unreachable_server_is_a_clear_error_before_any_work():
    with pytest.raises(RuntimeError, match="unreachable"):
        tracking.check_reachable("http://127.0.0.1:9", timeout_s=2)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_against_a_real_mlflow_server(tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}", "--artifacts-destination", str(tmp_path / "art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                tracking.check_reachable(uri, timeout_s=2)
                break
            except RuntimeError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(1)
        c = tracking.client(uri)
        exp_id = tracking.ensure_experiment(c, "served")
        parent = make_screen(c, exp_id, [("a", "FINISHED", {"objective": 0.5, "dev": {"macro_f1": 0.5}})])
        (tmp_path / "note.txt").write_text("hello")
        tracking.log_files(c, parent, [tmp_path / "note.txt"], artifact_path="report")
        assert [f.path for f in c.list_artifacts(parent, "report")] == ["report/note.txt"]
        child = tracking.child_runs(c, exp_id, parent)[0]
        assert child.data.metrics["dev.macro_f1"] == 0.5 and child.info.status == "FINISHED"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
