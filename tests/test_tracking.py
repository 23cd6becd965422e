"""MLflow bookkeeping and the report, against a real sqlite store and a real `mlflow server`."""
import time

import pytest

from emoloom import tracking
from emoloom.journal import JOURNAL, RunJournal, plain_reason
from emoloom.report import pareto_front
from emoloom.screen.verdict import mlflow_report


@pytest.fixture()
def store(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    c = tracking.client(uri)
    return c, tracking.ensure_experiment(c, "exp", tmp_path / "artifacts"), tmp_path


def journal(tmp, c, exp_id, name, key_tags, tags=None, **kw):
    return RunJournal(tmp / "journals" / name / JOURNAL, uri=c.tracking_uri, experiment_id=exp_id,
                      run_name=name, key_tags=key_tags, tags=tags or {}, **kw)


def make_screen(tmp, c, exp_id, trials):
    parent = journal(tmp, c, exp_id, "screen", {tracking.SCREEN_TAG: "h1", tracking.ROLE_TAG: "screen"})
    assert parent.sync()  # creates the run
    for name, status, metrics in trials:
        run = journal(tmp, c, exp_id, name, tags={tracking.PARENT_TAG: parent.run_id},
                      key_tags={tracking.SCREEN_TAG: "h1", tracking.ROLE_TAG: "trial", tracking.TRIAL_TAG: name})
        run.log_params({"model": {"name": "tiny-qwen2"}})
        run.log_metrics(metrics)
        run.finish(status, reason=None if status == "FINISHED" else "boom")
    return parent.run_id


def test_runs_are_found_again_by_their_tags_not_duplicated(store):
    c, exp_id, tmp = store
    keys = {tracking.SCREEN_TAG: "abc", tracking.TRIAL_TAG: "t1"}
    first = journal(tmp, c, exp_id, "t1", keys)
    first.sync()
    (tmp / "journals" / "t1" / JOURNAL).unlink()  # even without its journal, the run is found
    second = journal(tmp, c, exp_id, "t1", keys)
    second.sync()
    assert first.run_id == second.run_id
    assert len(c.search_runs([exp_id])) == 1


def test_a_resumed_screen_finds_its_parent_run_not_a_newer_trial_run(store):
    c, exp_id, tmp = store
    parent = make_screen(tmp, c, exp_id, [("a", "FINISHED", {"objective": 0.5})])  # trial starts later
    assert tracking.find_run(c, exp_id, **{tracking.SCREEN_TAG: "h1", tracking.ROLE_TAG: "screen"}).info.run_id == parent


def test_local_artifacts_go_where_the_experiment_says(store):
    c, exp_id, tmp = store
    assert c.get_experiment(exp_id).artifact_location == (tmp / "artifacts").resolve().as_uri()


def test_params_are_flattened_and_never_relogged_with_another_value(store):
    c, exp_id, tmp = store
    run = journal(tmp, c, exp_id, "r", {tracking.TRIAL_TAG: "x"})
    run.log_params({"optim": {"lr": 0.001}, "lora": {"r": 8}})
    run.log_params({"optim": {"lr": 0.001}})  # same value: fine
    assert c.get_run(run.run_id).data.params == {"optim.lr": "0.001", "lora.r": "8"}
    other = journal(tmp, c, exp_id, "r2", {tracking.TRIAL_TAG: "x"})  # same run, another journal
    warnings = []
    other._log = warnings.append
    other.log_params({"optim": {"lr": 0.1}})
    assert other.pending == 0 and "optim.lr" in warnings[0]  # MLflow keeps the first value
    assert c.get_run(run.run_id).data.params["optim.lr"] == "0.001"


def test_report_ranks_finished_then_stopped_trials_and_lists_failed_ones_last(store):
    c, exp_id, tmp = store
    parent = make_screen(tmp, c, exp_id, [
        ("a", "FINISHED", {"objective": 0.4, "dev": {"macro_f1": 0.4}, "train_seconds": 10, "epoch": 2}),
        ("b", "FAILED", {}),
        ("c", "FINISHED", {"objective": 0.7, "dev": {"macro_f1": 0.7, "per_label_f1": {"joy": 0.9}},
                           "train_seconds": 30.26, "epoch_eval_seconds": 2.0, "eval_seconds": 5.0, "epoch": 2}),
        # ASHA stopped it at rung 1 with a higher value than any finished trial reached
        ("d", "KILLED", {"objective": 0.9, "epoch": 1, "elapsed_seconds": 12.0, "epoch_eval_seconds": 1.0}),
    ])
    stopped = tracking.find_run(c, exp_id, **{tracking.TRIAL_TAG: "d"})
    tracking.set_tags(c, stopped.info.run_id, {"emoloom.status": "STOPPED"})
    report = mlflow_report(c, exp_id, c.get_run(parent), tmp / "report")
    assert [(r["trial"], r["status"], r["rung"]) for r in report["rows"]] == [
        ("c", "FINISHED", 2), ("a", "FINISHED", 2), ("d", "STOPPED", 1), ("b", "FAILED", None)]
    c_row, d_row = report["rows"][0], report["rows"][2]
    assert (c_row["train_s"], c_row["eval_s"]) == (28.26, 7.0)  # epoch evaluations count as evaluation
    assert (d_row["train_s"], d_row["eval_s"]) == (11.0, 1.0)
    assert report["rows"][3]["note"] == "boom"
    md = (tmp / "report" / "leaderboard.md").read_text()
    assert md.splitlines()[2].startswith("| 1 | c | FINISHED | tiny-qwen2 | 2 | 0.7 |")
    assert "| 28.3 | 7.0 |" in md.splitlines()[2]
    for png in ("objective_per_trial.png", "f1_vs_train_seconds.png", "best_per_label_f1.png", "best_vad_scatter.png"):
        assert (tmp / "report" / png).read_bytes()[:4] == b"\x89PNG"


def test_pareto_front_keeps_only_undominated_points():
    # (seconds, f1): (20, 0.5) is dominated by (10, 0.6)
    assert pareto_front([(10, 0.6), (20, 0.5), (30, 0.8), (5, 0.2)]) == [0, 2, 3]


def test_unreachable_server_is_a_clear_error_before_any_work():
    with pytest.raises(RuntimeError, match="unreachable"):
        tracking.check_reachable("http://127.0.0.1:9", timeout_s=2)


@pytest.mark.slow
def test_against_a_real_mlflow_server(tmp_path, mlflow_server):
    c = tracking.client(mlflow_server.uri)
    exp_id = tracking.ensure_experiment(c, "served")
    parent = make_screen(tmp_path, c, exp_id, [("a", "FINISHED", {"objective": 0.5, "dev": {"macro_f1": 0.5}})])
    (tmp_path / "note.txt").write_text("hello")
    tracking.log_files(c, parent, [tmp_path / "note.txt"], artifact_path="report")
    assert [f.path for f in c.list_artifacts(parent, "report")] == ["report/note.txt"]
    child = tracking.child_runs(c, exp_id, parent)[0]
    assert child.data.metrics["dev.macro_f1"] == 0.5 and child.info.status == "FINISHED"


@pytest.mark.slow
def test_an_outage_loses_nothing_the_journal_replays_it(tmp_path, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a short client retry budget
    c = tracking.client(mlflow_server.uri)
    exp_id = tracking.ensure_experiment(c, "outage")
    run = journal(tmp_path, c, exp_id, "t", {tracking.TRIAL_TAG: "t"}, retry_after_s=0)
    run.log_params({"optim": {"lr": 0.003}})
    run.log_metrics({"objective": 0.1}, step=1)
    assert run.pending == 0
    mlflow_server.stop()
    warnings = []
    run._log = warnings.append
    (tmp_path / "predictions.jsonl").write_text("{}\n")
    started = time.time()
    run.log_metrics({"objective": 0.4, "dev": {"macro_f1": 0.4}}, step=2)  # never raises
    run.log_files([tmp_path / "predictions.jsonl"], "dev")
    run.finish()
    assert time.time() - started < 30
    assert run.pending == 3 and "ConnectionError" in run.state["last_error"]
    assert len(warnings) == 1 and "replayed when MLflow answers" in warnings[0]
    assert run.view["metrics"]["objective"] == 0.4 and run.status == "FINISHED"  # the local truth
    mlflow_server.start()
    again = RunJournal.load(run.path)  # e.g. the screen's driver on resume
    assert again.sync(force=True) and again.pending == 0
    got = c.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.metrics == {"objective": 0.4, "dev.macro_f1": 0.4}
    assert [m.step for m in c.get_metric_history(run.run_id, "objective")] == [1, 2]
    assert [f.path for f in c.list_artifacts(run.run_id, "dev")] == ["dev/predictions.jsonl"]


def test_failure_reasons_name_the_original_exception_in_plain_text():
    try:
        try:
            raise FileNotFoundError("no such file: data/train.tsv")
        except FileNotFoundError as inner:
            raise RuntimeError("\x1b[31mcould not read the training data\x1b[0m") from inner
    except RuntimeError as exc:
        assert plain_reason(exc) == ("RuntimeError: could not read the training data "
                                     "(caused by FileNotFoundError: no such file: data/train.tsv)")

    class Wrapped(Exception):  # what Ray's RayTaskError looks like: the trial's error on `.cause`
        cause = ValueError("bad \x1b[1mrow\x1b[0m")

    assert plain_reason(Wrapped("\x1b[36mray::trial\x1b[0m Traceback ...")) == "ValueError: bad row"


def test_registering_the_same_best_twice_keeps_one_version(store):
    c, exp_id, tmp = store
    run = journal(tmp, c, exp_id, "best", {tracking.TRIAL_TAG: "b"})
    (tmp / "adapter").mkdir()
    (tmp / "adapter" / "adapter_config.json").write_text("{}")
    run.log_files([tmp / "adapter"])
    first = tracking.register_best(c, run.run_id, "m")
    second = tracking.register_best(c, run.run_id, "m")
    assert first == second == "1"
    assert len(c.search_model_versions("name = 'm'")) == 1


def test_experiments_open_on_the_runs_view(store):
    """MLflow 3's UI picks the view from mlflow.experimentKind; an older experiment gets it too,
    a user's own choice is kept."""
    c, exp_id, tmp = store
    assert c.get_experiment(exp_id).tags[tracking.KIND_TAG] == "custom_model_development"
    old = c.create_experiment("old", artifact_location=(tmp / "old").resolve().as_uri())
    assert tracking.ensure_experiment(c, "old") == old
    assert c.get_experiment(old).tags[tracking.KIND_TAG] == "custom_model_development"
    c.set_experiment_tag(old, tracking.KIND_TAG, "genai_development")
    tracking.ensure_experiment(c, "old")
    assert c.get_experiment(old).tags[tracking.KIND_TAG] == "genai_development"


def test_a_trial_asha_stopped_ends_finished_when_it_last_reported_and_a_failed_one_failed(store):
    from types import SimpleNamespace

    from emoloom.screen.run import reconcile, replay
    from emoloom.screen.trial import TrialContext, trial_journal

    c, exp_id, tmp = store
    ctx = TrialContext(tracking_uri=c.tracking_uri, experiment_id=exp_id, parent_run_id="p", screen_hash="h1",
                       screen={}, trials_dir=str(tmp / "trials"))
    for tid in ("stopped", "failed"):
        run = trial_journal(ctx, tid, autosync=False)
        run.log_metrics({"objective": 0.3, "epoch": 1})
    last = trial_journal(ctx, "stopped", autosync=False).last_logged
    time.sleep(1.1)  # the screen ends later than the stopped trial's last report
    grid = [SimpleNamespace(path=str(tmp / "ray" / "trial_stopped"), error=None),
            SimpleNamespace(path=str(tmp / "ray" / "trial_failed"), error=RuntimeError("boom"))]
    reconcile(ctx, grid)
    assert replay(ctx.trials_dir) == 0
    runs = {r.data.tags[tracking.TRIAL_TAG]: r for r in c.search_runs([exp_id])}
    stopped, failed = runs["stopped"], runs["failed"]
    # a stop is the screen working: not red in the UI, ended when Tune stopped it, said why
    assert stopped.info.status == "FINISHED" and stopped.info.end_time == last
    assert stopped.data.tags["emoloom.status"] == "STOPPED"
    assert stopped.data.tags["emoloom.note"] == "stopped early by ASHA after epoch 1"
    assert "emoloom.failure" not in stopped.data.tags
    assert failed.info.status == "FAILED" and failed.data.tags["emoloom.failure"] == "RuntimeError: boom"
