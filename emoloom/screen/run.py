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
from emoloom.config import config_hash
from emoloom.screen.config import ClusterShape, ScreenConfig
from emoloom.screen.plan import concurrency, trial_demand
from emoloom.screen.space import SearchSpace


def screen_hash(cfg: ScreenConfig, space: SearchSpace) -> str:
    """Identity of a screen for resume: what changes results, not where it runs or logs."""
    from pydantic import BaseModel

    class _Identity(BaseModel):
        cfg: dict
        space: dict

    ident = _Identity(cfg=cfg.model_dump(mode="json", exclude={"ray", "cluster", "mlflow", "storage", "resources"}),
                      space=space.model_dump(mode="json"))
    return config_hash(ident)


def dry_run(cfg: ScreenConfig, space: SearchSpace, digest: str) -> dict[str, Any]:
    cluster = cfg.cluster or ClusterShape()
    return {
        "config_hash": digest,
        "config": cfg.model_dump(mode="json"),
        "space": {"file": cfg.space, "metric": space.metric, "mode": space.mode,
                  "num_trials": space.num_trials, "max_concurrent": space.max_concurrent,
                  "sampler": space.sampler, "seed": space.seed, "asha": space.asha.model_dump(),
                  "params": space.summary(), "fixed": space.fixed, "baselines": space.baselines},
        "trial_resources": trial_demand(cfg),
        "plan": concurrency(cfg, space, cluster),
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
                "EMOLOOM_SHARED_DATA", "MLFLOW_TRACKING_URI"):
        if key in os.environ:
            env[key] = os.environ[key]
    ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False,
             runtime_env={"env_vars": env})
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
    return ASHAScheduler(time_attr=a.time_attr, max_t=a.max_t + 1, grace_period=a.grace_period,
                         reduction_factor=a.reduction_factor)


def run_screen(cfg: ScreenConfig, space: SearchSpace, *, resume: bool = False) -> dict[str, Any]:
    from ray import tune

    from emoloom.report import build_report
    from emoloom.screen.trial import TrialContext, run_trial
    from emoloom.versions import provenance

    t0 = time.time()
    digest = screen_hash(cfg, space)
    storage = Path(cfg.storage).resolve()
    exp_name = f"{cfg.name}-{digest}"
    exp_dir = storage / exp_name
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, storage)
    tracking.check_reachable(uri)  # before any training
    c = tracking.client(uri)
    local_store = not uri.startswith(("http://", "https://", "databricks"))
    exp_id = tracking.ensure_experiment(c, cfg.mlflow.experiment,
                                        storage / "mlartifacts" if local_store else None)

    restorable = tune.Tuner.can_restore(str(exp_dir))
    if resume and not restorable:
        raise SystemExit(f"--resume: no interrupted screen at {exp_dir} (config hash {digest})")
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "screen.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    prov = provenance()
    parent, resumed = tracking.start_or_resume(
        c, exp_id, run_name=exp_name,
        tags={"emoloom.config_hash": digest, "emoloom.space": cfg.space, **prov["tags"]},
        key_tags={tracking.SCREEN_TAG: digest, tracking.ROLE_TAG: "screen"})
    if not resumed:
        tracking.log_params(c, parent.info.run_id, {
            "screen": cfg.model_dump(mode="json", exclude={"train"}),
            "space": {"metric": space.metric, "mode": space.mode, "num_trials": space.num_trials,
                      "max_concurrent": space.max_concurrent, "params": ",".join(space.params)}})
        tracking.log_files(c, parent.info.run_id, [exp_dir / "screen.yaml"])

    ctx = TrialContext(tracking_uri=uri, experiment_id=exp_id, parent_run_id=parent.info.run_id,
                       screen_hash=digest, screen=cfg.model_dump(mode="json"),
                       fixed=space.fixed, metric=space.metric, mode=space.mode, trials_dir=str(exp_dir / "trials"))
    where = init_ray(cfg)
    driver = {"cpu": cfg.resources.driver_cpus}
    if cfg.resources.driver_resource:  # e.g. `trial_driver`, offered only by the head (cluster/)
        driver[cfg.resources.driver_resource] = 1
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), driver)
    if restorable:
        print(f"resuming screen {exp_name} from {exp_dir}", file=sys.stderr)
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=_searcher(space, exp_dir, digest), scheduler=_scheduler(space),
                                        metric="objective", mode=space.mode, num_samples=space.num_trials,
                                        reuse_actors=False, trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(name=exp_name, storage_path=str(storage),
                                      failure_config=tune.FailureConfig(max_failures=0, fail_fast=cfg.fail_fast),
                                      verbose=1),
        )
    grid = tuner.fit()
    _reconcile(c, exp_id, parent.info.run_id, digest, grid)

    out = exp_dir / "report"
    report = build_report(c, exp_id, parent.info.run_id, out, space.mode)
    tracking.log_files(c, parent.info.run_id, report["files"], artifact_path="report")
    rows = report["rows"]
    best = next((r for r in rows if r["status"] == "FINISHED" and r["objective"] is not None), None)
    summary = {"screen": exp_name, "config_hash": digest, "ray": where, "tracking_uri": uri,
               "experiment_id": exp_id, "parent_run_id": parent.info.run_id,
               "trials": len(rows), "failed": sum(r["status"] == "FAILED" for r in rows),
               "stopped_early": sum(r["status"] == "STOPPED" for r in rows),
               "wall_s": round(time.time() - t0, 1), "best": best, "report_dir": str(out)}
    if best is not None:
        tracking.set_tags(c, parent.info.run_id, {"emoloom.best_trial": best["trial"],
                                                  "emoloom.best_run_id": best["run_id"]})
        tracking.log_metrics(c, parent.info.run_id, {"best_objective": best["objective"],
                                                      "wall_s": summary["wall_s"]})
        if cfg.mlflow.registered_model:
            try:
                summary["registered_version"] = tracking.register_best(c, best["run_id"], cfg.mlflow.registered_model)
            except Exception as exc:  # noqa: BLE001 - registry problems must not lose the screen
                print(f"warning: could not register the best adapter: {exc}", file=sys.stderr)
    tracking.finish(c, parent.info.run_id)
    (exp_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _reconcile(c, exp_id: str, parent_id: str, digest: str, grid) -> None:
    """Give every trial's MLflow run a final status from Tune's view: failed trials FAILED with
    the error (also when the trial process died before it could say so), ASHA-stopped ones
    KILLED with tag emoloom.status=STOPPED."""
    for result in grid:
        tid = trial_id_of(result.path)
        run = tracking.find_run(c, exp_id, **{tracking.SCREEN_TAG: digest, tracking.ROLE_TAG: "trial",
                                              tracking.TRIAL_TAG: tid}) if tid else None
        if run is None:
            continue
        run_id = run.info.run_id
        if result.error is not None:
            if run.info.status != "FAILED":
                tracking.set_tags(c, run_id, {"emoloom.status": "FAILED"})
                tracking.finish(c, run_id, "FAILED", reason=_short(result.error))
        elif run.info.status == "RUNNING":
            # Tune ended the trial without an error and without the trial finishing: ASHA stop.
            tracking.set_tags(c, run_id, {"emoloom.status": "STOPPED"})
            tracking.finish(c, run_id, "KILLED", reason="stopped early by ASHA")


def trial_dirname(trial) -> str:
    """Short, parseable trial folders: trial_<trial_id> (the MLflow run's trial key)."""
    return f"trial_{trial.trial_id}"


def trial_id_of(path: str | None) -> str | None:
    name = Path(path).name if path else ""
    return name.removeprefix("trial_") if name.startswith("trial_") else None


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) < 1500 else text[:1500] + " ..."
