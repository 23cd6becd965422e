"""Orchestration of one screen: config -> Ray -> Tune(Optuna, ASHA) -> MLflow -> leaderboard."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from emoloom import tracking
from emoloom.atomic import atomic_write
from emoloom.config import config_hash
from emoloom.screen.config import ClusterShape, ScreenConfig
from emoloom.screen.plan import concurrency, trial_demand
from emoloom.report import best_row
from emoloom.screen.space import SearchSpace


def screen_hash(cfg: ScreenConfig, space: SearchSpace) -> str:
    """Identity of a screen for resume: what changes results, not where it runs or logs."""
    from pydantic import BaseModel

    class _Identity(BaseModel):
        cfg: dict
        space: dict

    # where it runs and logs, and the audit after it: none of them changes the screen's results
    elsewhere = {"ray", "cluster", "mlflow", "storage", "resources", "fidelity"}
    ident = _Identity(cfg=cfg.model_dump(mode="json", exclude=elsewhere),
                      space=space.model_dump(mode="json"))
    return config_hash(ident)


def dry_run(cfg: ScreenConfig, space: SearchSpace, digest: str) -> dict[str, Any]:
    """The plan of a screen without starting it: config, hash, space, resources, and the
    evaluation sample it would draw (rows per label, with warnings for labels that get few)."""
    from emoloom.screen.gpu_estimate import estimate_gpu_hours

    cluster = cfg.cluster or ClusterShape()
    try:
        sets = screen_sets(cfg, space)
    except Exception as exc:  # noqa: BLE001 - e.g. data only the cluster's storage (or the hub) holds
        from emoloom.journal import plain_reason

        sample = {"skipped": f"the evaluation sample could not be drawn here: {plain_reason(exc)}", "warnings": []}
    else:
        m = sets.manifest
        sample = {"rows": m["n"], "epoch_rows": len(sets.epoch), "sha256": m["sha256"], "sources": m["sources"],
                  "label_counts": m["label_counts"], "cross_corpus_rows": {k: len(v) for k, v in sets.cross.items()},
                  "warnings": label_warnings(m)}
    return {
        "config_hash": digest,
        "config": cfg.model_dump(mode="json"),
        "space": {"file": cfg.space, "metric": space.metric, "mode": space.mode,
                  "num_trials": space.num_trials, "max_concurrent": space.max_concurrent,
                  "sampler": space.sampler, "seed": space.seed, "asha": space.asha.model_dump(),
                  "params": space.summary(), "fixed": space.fixed, "baselines": space.baselines},
        "trial_resources": trial_demand(cfg),
        "plan": concurrency(cfg, space, cluster),
        "evaluation_sample": sample,
        # GPU screens: GPU-hours from rates measured by bench/gpu_check.py (or why there is none)
        **estimate_gpu_hours(cfg, space),
    }


def init_ray(cfg: ScreenConfig) -> str:
    """Join the cluster we were given (config, RAY_ADDRESS, or the job's cluster), else start one."""
    import ray

    if ray.is_initialized():
        return "existing"
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        # A Ray job already carries its runtime env (cluster/runtime_env.yaml); passing another
        # one that sets the same keys makes Ray refuse to merge them.
        ray.init(address=address, log_to_driver=True)
        return address
    env = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "EMOLOOM_CACHE",
                "EMOLOOM_SHARED_DATA", "MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        if key in os.environ:
            env[key] = os.environ[key]
    from emoloom.local_ray import local_ray_options

    # Every listener on 127.0.0.1 (emoloom/local_ray.py): a local screen is not a network service.
    ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False,
             runtime_env={"env_vars": env}, **local_ray_options())
    return "local"


def _searcher(space: SearchSpace, exp_dir: Path, digest: str):
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    from emoloom.screen.search import ResumableOptunaSearch

    sampler = (optuna.samplers.TPESampler(seed=space.seed) if space.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=space.seed))
    # The study lives in its own sqlite file next to Tune's state, so a resumed screen keeps
    # the sampler's history (and it can be inspected with optuna-dashboard).
    storage = optuna.storages.RDBStorage(f"sqlite:///{(exp_dir / 'optuna.db').resolve()}")
    search = ResumableOptunaSearch(space=space.distributions(), metric="objective", mode=space.mode,
                          points_to_evaluate=[dict(b) for b in space.baselines] or None,
                          sampler=sampler, study_name=f"screen-{digest}", storage=storage)
    return ConcurrencyLimiter(search, max_concurrent=space.max_concurrent)


def _scheduler(space: SearchSpace):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if not space.asha.enabled:
        return FIFOScheduler()
    a = space.asha
    # ASHA stops every trial that reaches max_t. A trial reports its last training epoch and
    # then its final KV-off evaluation; one step of headroom lets that evaluation happen while
    # the rungs (grace_period * reduction_factor^k < max_t + 1) stay where the space put them.
    # ASHA compares `rung_value` (the space's asha.signal, oriented to its mode: screen/signals.py);
    # the searcher keeps ranking by `objective`, so the two carry their own metric.
    return ASHAScheduler(time_attr=a.time_attr, max_t=a.max_t + 1, grace_period=a.grace_period,
                         reduction_factor=a.reduction_factor, metric="rung_value", mode=space.mode)


def run_screen(cfg: ScreenConfig, space: SearchSpace, *, resume: bool = False,
               rerun: bool = False, digest: str | None = None) -> dict[str, Any]:
    """`digest`: the screen's hash taken on its paths as written (before presets.resolve_paths)."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from emoloom.journal import JOURNAL, RunJournal
    from emoloom.screen.plan import trial_demand
    from emoloom.screen.trial import TrialContext, run_trial
    from emoloom.screen.verdict import ledger, screen_report
    from emoloom.versions import provenance

    t0 = time.time()
    digest = digest or screen_hash(cfg, space)
    storage = Path(cfg.storage).resolve()
    exp_name = f"{cfg.name}-{digest}"
    exp_dir = storage / exp_name
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, storage)
    tracking.check_reachable(uri)  # before any training
    c = tracking.client(uri)
    local_store = not uri.startswith(("http://", "https://", "databricks"))
    exp_id = tracking.ensure_experiment(c, cfg.mlflow.experiment,
                                        storage / "mlartifacts" if local_store else None)

    finished = finished_summary(exp_dir)
    if finished is not None and not rerun:
        return revisit(c, cfg, uri, exp_dir, finished)
    if finished is not None:
        set_aside(c, exp_id, exp_dir, digest)
    restorable = tune.Tuner.can_restore(str(exp_dir))
    if resume and not restorable:
        raise SystemExit(f"--resume: no interrupted screen at {exp_dir} (config hash {digest})")
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "screen.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (exp_dir / "space.yaml").write_text(yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False))  # for audits

    prov = provenance()
    parent = RunJournal(exp_dir / JOURNAL, uri=uri, experiment_id=exp_id, run_name=exp_name,
                        tags={"emoloom.config_hash": digest, "emoloom.space": cfg.space, **prov["tags"]},
                        key_tags={tracking.SCREEN_TAG: digest, tracking.ROLE_TAG: "screen"})
    parent.reopen()
    if not parent.sync(force=True):
        raise RuntimeError(f"MLflow at {uri} did not take the screen's run: {parent.state['last_error']}")
    parent.log_params({
        "screen": cfg.model_dump(mode="json", exclude={"train"}),
        "space": {"metric": space.metric, "mode": space.mode, "num_trials": space.num_trials,
                  "max_concurrent": space.max_concurrent, "params": ",".join(space.params)}})
    parent.log_files([exp_dir / "screen.yaml"])
    trials_dir = exp_dir / "trials"
    replay(trials_dir)  # what an earlier, interrupted run of this screen could not tell MLflow

    phases = {"tracking_setup": time.time() - t0}  # where the screen's own time goes (summary.json)
    t_stats = time.time()
    try:
        sets = screen_sets(cfg, space)
    except Exception as exc:  # noqa: BLE001 - one clear line before any trial starts
        from emoloom.journal import plain_reason

        raise SystemExit(f"error: the evaluation sample could not be drawn: {plain_reason(exc)}") from None
    for line in label_warnings(sets.manifest):
        print(f"warning: evaluation sample: {line}", file=sys.stderr)
    write_json(exp_dir / "eval_sample.json", sets.manifest)
    parent.log_files([exp_dir / "eval_sample.json"])
    ctx = TrialContext(tracking_uri=uri, experiment_id=exp_id, parent_run_id=parent.run_id,
                       screen_hash=digest, screen=cfg.model_dump(mode="json"),
                       fixed=space.fixed, metric=space.metric, mode=space.mode, trials_dir=str(trials_dir),
                       sets=sets.to_json(), rung_signal=space.asha.signal)
    t_floors = time.time()
    floors = record_floors(ctx, cfg, space, sets, storage / "floors")
    stats_s = time.time() - t_stats
    phases["eval_sample"], phases["floors"] = t_floors - t_stats, time.time() - t_floors
    t_models = time.time()
    prepare_models(cfg, space)
    phases["models"] = time.time() - t_models
    t_ray = time.time()
    where = init_ray(cfg)
    driver = {"cpu": cfg.resources.driver_cpus}
    if cfg.resources.driver_resource:  # e.g. `trial_driver`, offered only by the head (cluster/)
        driver[cfg.resources.driver_resource] = 1
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), driver)
    # Tune snapshots its experiment every 10 s by default; a trial started after the last
    # snapshot of a killed driver would be forgotten and its configuration sampled anew.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # Tune's automatic TensorBoard logger makes it advertise a `tensorboard` command that is not
    # installed; the CSV/JSON ones (what Tune's result grid reads) are passed explicitly below.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Reports and registration download small artifacts; a progress bar each is noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if restorable:
        print(f"resuming screen {exp_name} from {exp_dir}", file=sys.stderr)
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        # reuse_actors: a fresh trial process spends ~7 s (2 CPU cores) importing torch,
        # transformers and peft before its first step; a reused one has them loaded already.
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=_searcher(space, exp_dir, digest), scheduler=_scheduler(space),
                                        num_samples=space.num_trials,
                                        reuse_actors=True, trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(name=exp_name, storage_path=str(storage),
                                      failure_config=tune.FailureConfig(max_failures=0, fail_fast=cfg.fail_fast),
                                      callbacks=[CSVLoggerCallback(), JsonLoggerCallback()], verbose=1),
        )
    phases["ray_setup"] = time.time() - t_ray
    t_fit = time.time()
    grid = tuner.fit()
    phases["trials"] = time.time() - t_fit
    t_reconcile = time.time()
    reconcile(ctx, grid)
    phases["reconcile"] = time.time() - t_reconcile

    t_stats = time.time()
    out = exp_dir / "report"
    report = screen_report(trials_dir, out, mode=space.mode, metric=space.metric, searched=list(space.params),
                           seed=cfg.seed)
    rows, verdict = report["rows"], report["verdict"]
    log_statistics(ctx, rows, verdict)
    cost = ledger(rows, trial_demand(cfg), space.asha.max_t if space.asha.enabled else max(
        [r["rung"] or 0 for r in rows if r["role"] == "trial"] or [1]))
    write_json(out / "ledger.json", cost)
    stats_s += time.time() - t_stats
    phases["report"] = time.time() - t_stats
    t_replay = time.time()
    pending = replay(trials_dir)
    parent.log_files([*report["files"], out / "ledger.json"], artifact_path="report")
    best = best_row(rows)
    summary = {"screen": exp_name, "config_hash": digest, "ray": where, "tracking_uri": uri,
               "experiment_id": exp_id, "parent_run_id": parent.run_id,
               "trials": sum(r["role"] == "trial" for r in rows), "failed": sum(r["status"] == "FAILED" for r in rows),
               "stopped_early": sum(r["status"] == "STOPPED" for r in rows),
               "wall_s": round(time.time() - t0, 1), "statistics_s": round(stats_s, 1),
               "best": best and {k: v for k, v in best.items() if k != "folder"}, "report_dir": str(out),
               "storage": str(exp_dir), "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "verdict": verdict, "floors": floors, "ledger": {k: cost[k] for k in ("totals", "eval_share", "early_stopping")},
               "registered_version": None}
    parent.log_metrics({"tie_group_size": len(verdict["tie_group"]), "statistics_s": summary["statistics_s"],
                        "ledger": {f"{part}.{n}": x for part in ("totals", "eval_share") for n, x in cost[part].items()},
                        "ledger.early_stopping.saved_share": cost["early_stopping"]["saved_share"]})
    parent.set_tags({"emoloom.verdict": " ".join(verdict["sentences"]),
                     tracking.NOTE_TAG: screen_note(exp_name, out / "leaderboard.md", best)})
    if best is not None:
        parent.set_tags({"emoloom.best_trial": best["trial"], "emoloom.best_run_id": best["run_id"],
                         "emoloom.best_below_floor": verdict["below_floor_best"]})
        parent.log_metrics({"best_objective": best["objective"], "wall_s": summary["wall_s"]})
        t_register = time.time()
        summary["registered_version"] = register(c, cfg, best, verdict)
        phases["register"] = time.time() - t_register
    parent.finish()
    phases["tracking_finish"] = time.time() - t_replay - phases.get("register", 0.0)
    summary["phases_s"] = {k: round(v, 2) for k, v in phases.items()}
    summary["pending_tracking"] = pending + (parent.pending > 0)
    write_json(exp_dir / SUMMARY, summary)
    return summary


def screen_note(exp_name: str, board: Path, best: dict | None) -> str:
    """The parent run's Description in the MLflow UI: the leaderboard (markdown, with the verdict
    sentences under it) and the best candidate. Rows are dropped from the bottom if it would not
    fit a tag; the full table is the run's artifact report/leaderboard.md."""
    head = [f"### Screen {exp_name}", ""]
    if best:
        head += [f"**Best**: trial {best['trial']} ({best['model']}), objective {best['objective']:.4f}", ""]
    text = board.read_text() if board.is_file() else "(no trials)"
    lines = text.splitlines()
    tail = "\n\n_Full table: artifact `report/leaderboard.md`._"
    table = [i for i, line in enumerate(lines) if line.startswith("|")]
    while table and len("\n".join(head + lines)) + len(tail) > tracking.NOTE_CHARS and len(table) > 3:
        del lines[table.pop()]  # the lowest-ranked row first; header and separator stay
    return "\n".join(head + lines) + tail


SUMMARY = "summary.json"


def prepare_models(cfg: ScreenConfig, space: SearchSpace) -> None:
    """Build every built-in and convert every GGUF the screen names, once, before trials start:
    concurrent trials would each convert the same file (~25 s and 0.5 GB apiece). A file that
    cannot be converted stops the screen here with one line, before any trial runs."""
    from emoloom.models import ModelUnavailable, model_path

    spec = base_train_config(cfg, space).model
    names = {spec.name}
    param = space.params.get("model.name")
    if param is not None and param.type == "categorical":
        names.update(str(choice) for choice in param.choices)
    for name in sorted(names):
        try:
            model_path(spec.model_copy(update={"name": name}))
        except ModelUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


def write_json(path: Path, data: Any) -> None:
    with atomic_write(path) as f:
        f.write(json.dumps(data, indent=2, default=str))


def base_train_config(cfg: ScreenConfig, space: SearchSpace):
    """The training config every trial starts from: the screen's `train:` plus the space's fixed
    values (no sampled parameter); what the evaluation sample and the floors are drawn from."""
    from emoloom.screen.trial import build_train_config

    return build_train_config(cfg.train, space.fixed, {}, Path(cfg.storage) / "base", cfg.seed)


def screen_sets(cfg: ScreenConfig, space: SearchSpace):
    """The rows every trial is scored on (`screen.sample.evaluation_sets`)."""
    from emoloom.screen.sample import evaluation_sets

    return evaluation_sets(base_train_config(cfg, space), cfg.eval.model_dump(mode="json"), cfg.seed)


def label_warnings(manifest: dict) -> list[str]:
    from emoloom.screen.sample import label_coverage_warnings

    return label_coverage_warnings(manifest["label_counts"])


def record_floors(ctx, cfg: ScreenConfig, space: SearchSpace, sets, cache_dir: Path) -> dict[str, Any]:
    """Fit and score the floors once per screen (cached by data hash in `cache_dir`) and record
    each as a run of its own (role `floor`) with the same files and metrics as a trial."""
    from emoloom.journal import JOURNAL, RunJournal
    from emoloom.screen.floors import compute_floors
    from emoloom.screen.trial import summarize
    from emoloom.train.examples import prepare_data

    prepared = prepare_data(base_train_config(cfg, space))
    train = [r for r in prepared.pool_a + prepared.pool_b if not r.meta.get("flip_of")]  # no augmented copies
    evals = {"dev": sets.dev, **{f"cross/{k}": v for k, v in sets.cross.items()}}
    result = compute_floors(train, evals, cache_dir, seed=cfg.seed)
    for name, per_eval in result["floors"].items():
        folder = Path(ctx.trials_dir) / f"floor_{name}"
        journal = RunJournal(folder / JOURNAL, uri=ctx.tracking_uri, experiment_id=ctx.experiment_id,
                             run_name=f"floor: {name}",
                             tags={tracking.PARENT_TAG: ctx.parent_run_id, "emoloom.status": "FLOOR"},
                             key_tags={tracking.SCREEN_TAG: ctx.screen_hash, tracking.ROLE_TAG: "floor",
                                       tracking.TRIAL_TAG: f"floor-{name}"})
        if journal.status == "FINISHED":
            continue
        predictions = folder / "dev" / "predictions.jsonl"
        write_json(folder / "dev" / "metrics.json", per_eval["dev"]["metrics"])
        with atomic_write(predictions) as f:
            f.writelines(json.dumps(row) + "\n" for row in per_eval["dev"]["rows"])
        metrics = summarize({"metrics": per_eval["dev"]["metrics"]}, "dev")
        metrics["objective"] = metrics["dev.macro_f1_strict"]
        cross = [k for k in per_eval if k != "dev"]
        for k in cross:
            s = summarize({"metrics": per_eval[k]["metrics"]}, "cross")
            metrics.update({"cross.ekman_macro_f1": s["cross.ekman_macro_f1"],
                            "cross.parse_ok_rate": s["cross.parse_ok_rate"]} if len(cross) == 1 else
                           {f"cross.{k.removeprefix('cross/')}.ekman_macro_f1": s["cross.ekman_macro_f1"]})
        journal.log_params({"model": {"name": name}, "floor": result["fit"][name]})
        journal.log_metrics(metrics)
        journal.log_files([predictions, folder / "dev" / "metrics.json"], "dev")
        journal.finish()
    return {"cached": result["cached"], "path": result["path"], "mean_vad": result["mean_vad"],
            "fit_seconds": {k: v["seconds"] for k, v in result["fit"].items()}}


def log_statistics(ctx, rows: list[dict], verdict: dict) -> None:
    """Each trial's and floor's interval (and its difference to the best) on its own run."""
    from emoloom.journal import JOURNAL, RunJournal

    for r in rows:
        if not r.get("ci95") or not r.get("folder"):
            continue
        journal = RunJournal.load(Path(r["folder"]) / JOURNAL, autosync=False)
        metrics = {"objective_ci_low": r["ci95"][0], "objective_ci_high": r["ci95"][1]}
        if r.get("diff_ci95"):
            metrics.update(diff_to_best_ci_low=r["diff_ci95"][0], diff_to_best_ci_high=r["diff_ci95"][1])
        journal.log_metrics(metrics)
        if r["role"] == "trial":
            journal.set_tags({"emoloom.tied_with_best": str(r["tied"]).lower(),
                              "emoloom.below_floor": str(r["below_floor"]).lower()})


def finished_summary(exp_dir: Path) -> dict | None:
    """The summary of a screen that ran to its end, else None (never run, or interrupted)."""
    path = exp_dir / SUMMARY
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if "finished_at" in summary else None


def revisit(c, cfg: ScreenConfig, uri: str, exp_dir: Path, summary: dict) -> dict:
    """A finished screen run again: leave its results as they are; only hand MLflow what an
    outage kept from it, and register its best if that could not be done before."""
    from emoloom.journal import JOURNAL, RunJournal

    pending = replay(exp_dir / "trials")
    parent = exp_dir / JOURNAL
    if parent.is_file() and not RunJournal.load(parent, uri).sync(force=True):
        pending += 1
    best = summary.get("best")
    if best and summary.get("registered_version") is None and pending == 0:
        summary["registered_version"] = register(c, cfg, best, summary.get("verdict"))
    summary.update(pending_tracking=pending)
    write_json(exp_dir / SUMMARY, summary)
    print(f"screen {summary['screen']} already finished at {summary['finished_at']} ({exp_dir}); its "
          f"results are kept as they are. Run it again from scratch with --rerun, or pick another name=.",
          file=sys.stderr)
    return {**summary, "already_finished": True}


def set_aside(c, exp_id: str, exp_dir: Path, digest: str) -> Path:
    """--rerun of a finished screen: keep the old results beside the new ones, under a new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    old = exp_dir.with_name(f"{exp_dir.name}.before-{stamp}")
    exp_dir.rename(old)
    run = tracking.find_run(c, exp_id, **{tracking.SCREEN_TAG: digest, tracking.ROLE_TAG: "screen"})
    if run is not None:  # the old parent run is no longer the one this screen resumes into
        tracking.set_tags(c, run.info.run_id, {tracking.SCREEN_TAG: f"{digest}.before-{stamp}"})
    print(f"--rerun: the finished screen's files moved to {old}", file=sys.stderr)
    return old


def register(c, cfg: ScreenConfig, best: dict, verdict: dict | None = None) -> str | None:
    """Register the best trial as a servable MLflow model (emoloom.serve: base model reference,
    adapter, the screen's decoder settings; idempotent), tagged with whether the screen separated
    it from the runner-up; None when it could not be done now."""
    if not cfg.mlflow.registered_model:
        return None
    if not best.get("run_id"):
        print("warning: the best trial's MLflow run does not exist yet (tracking outage); rerun the "
              "same command when MLflow answers to register it", file=sys.stderr)
        return None
    try:
        from emoloom.serve import log_candidate

        decoder = {"name": cfg.eval.decoder, "max_new_tokens": cfg.eval.max_new_tokens,
                   "batch_size": cfg.eval.batch_size}
        artifact = log_candidate(c, best["run_id"], decoder)
        version = tracking.register_best(c, best["run_id"], cfg.mlflow.registered_model, artifact=artifact)
        sep = (verdict or {}).get("separation")
        c.set_model_version_tag(cfg.mlflow.registered_model, version, "emoloom.separated_from_runner_up",
                                "no runner-up" if not sep or sep.get("separated") is None else str(sep["separated"]).lower())
        return version
    except Exception as exc:  # noqa: BLE001 - registry problems must not lose the screen
        from emoloom.journal import plain_reason

        print(f"warning: could not register the best adapter: {plain_reason(exc)}", file=sys.stderr)
        return None


def replay(trials_dir: Path) -> int:
    """Hand MLflow what the trials' journals hold and it has not taken; the number of journals
    still pending (after the first failure the others are not tried: MLflow is away)."""
    from emoloom.journal import RunJournal, journals

    pending = 0
    for path in journals(trials_dir):
        journal = RunJournal.load(path)
        if journal.run_id and not journal.pending:
            continue
        if pending or not journal.sync(force=True):
            pending += 1
    return pending


def reconcile(ctx, grid) -> None:
    """Give every trial's run a final status from Tune's view: failed trials FAILED with the
    original error (also when the trial process died before it could say so), ASHA-stopped ones
    FINISHED at their last report with emoloom.status=STOPPED (a stop is the screen working, not
    a failure: MLflow shows them ended when Tune stopped them, not red), and runs of trials Tune never recorded (started just
    before a killed driver's last snapshot) KILLED with emoloom.status=INTERRUPTED. Written to
    the journals; MLflow gets them with the next replay."""
    from emoloom.journal import journals, plain_reason
    from emoloom.screen.trial import trial_journal

    seen = set()
    for result in grid:
        tid = trial_id_of(result.path)
        if tid is None:
            continue
        seen.add(tid)
        journal = trial_journal(ctx, tid, autosync=False)  # replay() syncs
        if result.error is not None:
            if journal.status != "FAILED":
                journal.set_tags({"emoloom.status": "FAILED"})
                journal.finish("FAILED", reason=plain_reason(result.error))
        elif journal.status == "RUNNING":
            # Tune ended the trial without an error and without the trial finishing: ASHA stop.
            epoch = journal.view["metrics"].get("epoch")
            journal.set_tags({"emoloom.status": "STOPPED", "emoloom.note": "stopped early by ASHA"
                              + (f" after epoch {int(epoch)}" if epoch is not None else "")})
            journal.finish("FINISHED", end_time=journal.last_logged)
    for path in journals(ctx.trials_dir):
        tid = trial_id_of(str(path.parent))
        if tid is None or tid in seen:  # floors, and trials Tune knows
            continue
        journal = trial_journal(ctx, tid, autosync=False)  # replay() syncs
        if journal.status == "RUNNING":
            journal.set_tags({"emoloom.status": "INTERRUPTED"})
            journal.finish("KILLED", reason="interrupted with the screen's driver before Tune recorded the "
                                            "trial; Tune sampled another configuration in its place")


def trial_dirname(trial) -> str:
    """Short, parseable trial folders: trial_<trial_id> (the MLflow run's trial key)."""
    return f"trial_{trial.trial_id}"


def trial_id_of(path: str | None) -> str | None:
    name = Path(path).name if path else ""
    return name.removeprefix("trial_") if name.startswith("trial_") else None
