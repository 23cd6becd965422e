"""One trial of a screen: train a candidate through Ray Train, evaluate it KV-off, log to MLflow."""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from emoloom import tracking
from emoloom.config import flatten


@dataclass
class TrialContext:
    """What every trial needs from the driver (picklable; shipped with tune.with_parameters)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    screen_hash: str
    screen: dict
    fixed: dict = field(default_factory=dict)
    metric: str = "objective"  # the space's metric: what `objective` holds (see objective_of)
    mode: str = "max"
    trials_dir: str = "runs/trials"
    sets: dict = field(default_factory=dict)  # EvaluationSets.to_json(): the rows every trial is scored on
    rung_signal: str = "nll"  # what ASHA compares: the space's asha.signal (screen/signals.py); all are logged
    role: str = "trial"  # the runs' emoloom.role: "trial", or "fidelity" for an audit's retraining
    epoch_decode: bool = True  # decode the epoch sample after every epoch (audits skip it: no ASHA)
    # Fidelity audits only: {screen trial id: {"train": its training config, "budget": overrides,
    # "params": its sampled values}}; each audit trial's Tune config is then {"screen_trial": id}.
    retrain: dict = field(default_factory=dict)


@lru_cache(maxsize=1)
def train_keys() -> frozenset[str]:
    """Every dotted key of the training config (what spaces and `train:` may set)."""
    from emoloom.train.config import TrainConfig

    return frozenset(flatten(TrainConfig().model_dump(mode="json")))


def build_train_config(screen_train: dict, fixed: dict, params: dict, out: Path, seed: int):
    """Screen-wide training values < the space's fixed values < the sampled parameters."""
    from emoloom.config import load_config
    from emoloom.train.config import TrainConfig

    # Values travel as JSON text, which the override parser (YAML) reads back exactly.
    overrides = [f"{k}={json.dumps(v)}" for k, v in {**fixed, **params}.items()]
    base = {**json.loads(json.dumps(screen_train)), "out": str(out), "seed": seed}
    return load_config(TrainConfig, None, overrides, base=base)


def _digest(files: dict[str, str]) -> str:
    import hashlib

    blob = json.dumps(sorted(files.values())).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _eval_config(screen: dict, train_cfg, adapter: str | None, out: Path | None, actors: int, limit=None):
    from emoloom.eval.run import EvalConfig

    e, r = screen["eval"], screen["resources"]
    return EvalConfig(model=train_cfg.model, adapter=adapter, decoder=e["decoder"], actors=actors,
                      batch_size=e["batch_size"], max_new_tokens=e["max_new_tokens"], limit=limit,
                      out=str(out) if out else None, seed=screen["seed"], bootstrap=1000 if out else 0,
                      gpus_per_actor=r["gpus_per_eval_actor"] or None,
                      progress=out is not None)  # a tqdm bar for the final evaluations


def summarize(result: dict, prefix: str) -> dict[str, Any]:
    """The leaderboard's view of one evaluation: paper metrics (ParseOK rows) plus the strict
    variant (parse failures count as wrong), ParseOK rate, VAD and per-label F1."""
    m = result["metrics"]["all"]
    ok, strict = m["ok_only"], m["all_rows"]
    out = {
        f"{prefix}.macro_f1": ok["labels"]["macro_f1"],
        f"{prefix}.macro_recall": ok["labels"]["macro_recall"],
        f"{prefix}.micro_f1": ok["labels"]["micro_f1"],
        f"{prefix}.macro_f1_strict": strict["labels"]["macro_f1"],
        f"{prefix}.ekman_macro_f1": ok["labels"]["ekman_macro_f1"],
        f"{prefix}.ekman_macro_f1_strict": strict["labels"]["ekman_macro_f1"],
        f"{prefix}.parse_ok_rate": m["parse_ok_rate"],
        f"{prefix}.vad_1mrmse": ok["vad"]["one_minus_rmse"],
        f"{prefix}.vad_1mrmse_strict": strict["vad"]["one_minus_rmse"],
        f"{prefix}.forwards_per_example": result.get("forwards_per_example"),
    }
    out.update({f"{prefix}.per_label_f1.{k}": v for k, v in ok["labels"]["per_label_f1"].items()})
    return {k: (0.0 if v is None else v) for k, v in out.items()}


def objective_of(summary: dict, prefix: str = "dev", metric: str = "objective") -> float:
    """What the screen ranks by: the space's `metric` of one evaluation summary. The default,
    `objective`, is dev Macro-F1 with parse failures counted as wrong, so a candidate cannot win
    by answering only the easy prompts under the contract. Non-finite counts as 0."""
    value = summary.get(f"{prefix}.{'macro_f1_strict' if metric == 'objective' else metric}")
    return float(value) if value is not None and math.isfinite(value) else 0.0


def start_watchdog(seconds: float, journal, exit=os._exit) -> threading.Timer:
    """Fail a trial that runs past `seconds`: its journal says FAILED "timed out after N s", then
    its process ends (Tune records the trial as errored). A forward pass stuck in native code
    cannot be interrupted from another thread, so the process itself goes."""
    def fire():
        journal.set_tags({"emoloom.status": "FAILED"})
        journal.finish("FAILED", reason=f"timed out after {seconds:g} s (trial_timeout_s)")
        exit(1)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def _short_value(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:  # learning rates: 3.5e-3, not 0.0035
            mantissa, exp = f"{value:.1e}".split("e")
            return f"{mantissa.removesuffix('.0')}e{int(exp)}"
        return f"{value:.2f}"
    return str(value)


def run_name(trial_id: str, params: dict | None = None) -> str:
    """What the MLflow UI lists: the model and the searched values, then the trial's number, e.g.
    `tiny-llama lr=3e-3 vp=0.20 #00001` (a multi-word key by its initials: vad_preserve -> vp)."""
    if not params:
        return f"trial_{trial_id}"
    parts = [str(params["model.name"])] if "model.name" in params else []
    for key, value in params.items():
        if key == "model.name":
            continue
        last = key.rsplit(".", 1)[-1]
        short = "".join(w[0] for w in last.split("_")) if "_" in last else last
        parts.append(f"{short}={_short_value(value)}")
    return " ".join(parts) + f" #{trial_id.rsplit('_', 1)[-1]}"


def trial_journal(ctx: TrialContext, trial_id: str, autosync: bool = True, params: dict | None = None):
    """The trial's journal (its MLflow run, recorded locally first), created when missing; named by
    `params` (the sampled values) when given."""
    from emoloom.journal import JOURNAL, RunJournal

    name = run_name(trial_id, params)
    return RunJournal(Path(ctx.trials_dir) / f"trial_{trial_id}" / JOURNAL, uri=ctx.tracking_uri,
                      experiment_id=ctx.experiment_id, run_name=f"audit: {name}" if ctx.role == "fidelity" else name,
                      tags={tracking.PARENT_TAG: ctx.parent_run_id, "emoloom.status": "RUNNING"},
                      key_tags={tracking.SCREEN_TAG: ctx.screen_hash, tracking.ROLE_TAG: ctx.role,
                                tracking.TRIAL_TAG: trial_id}, autosync=autosync)


def tune_metrics(metrics: dict) -> dict:
    """What a trial reports to Tune: every scalar except the per-label breakdown."""
    return {k: v for k, v in metrics.items() if "per_label" not in k}


def epoch_signals(ctx: TrialContext, screen: dict, train_cfg, model, tokenizer, metrics: dict,
                  epoch_rows: list, sample_rows: list) -> dict[str, float]:
    """The epoch report's signals: the decoded objective on `epoch_rows` (with its ParseOK rate),
    the label NLL on `sample_rows` (the evaluation sample), the head Macro-F1 from the training
    loop's `metrics`; each as `rung.<name>`, plus `rung_value` for ASHA (`signals.rung_report`)."""
    from emoloom.screen.signals import label_nll, rung_report

    extra: dict[str, float] = {}
    values = {"nll": label_nll(model, tokenizer, sample_rows, batch_size=screen["eval"]["batch_size"],
                               max_length=train_cfg.data.max_length),
              "head_f1": float(metrics.get("dev_head_macro_f1", 0.0))}
    if ctx.epoch_decode:
        from emoloom.eval.run import evaluate
        from emoloom.models import Loaded

        candidate = Loaded(model=model, tokenizer=tokenizer, spec=train_cfg.model, path="(training)")
        quick = evaluate(_eval_config(screen, train_cfg, None, None, actors=0), epoch_rows,
                         candidate=candidate, log=lambda _msg: None)
        summary = summarize(quick, "epoch_dev")
        values["decoded"] = objective_of(summary, "epoch_dev", ctx.metric)
        extra.update(objective=values["decoded"], epoch_dev_parse_ok_rate=summary["epoch_dev.parse_ok_rate"])
    extra.update(rung_report(values, ctx.rung_signal, ctx.mode) if ctx.rung_signal in values
                 else {f"rung.{k}": v for k, v in values.items()})
    return extra


def zero_shot(ctx: TrialContext, screen: dict, train_cfg, model, tokenizer, epoch_rows: list,
              sample_rows: list) -> dict[str, float]:
    """The base model before any training step (epoch 0): the label NLL on the evaluation sample
    and the space's metric decoded KV-off on the epoch rows, with its ParseOK rate, as
    `zero_shot.*`. A screen over base models shows what each base brings before fine-tuning.

    `model` is the training model before its first step (LoRA starts as the identity), on the
    device training runs on. Cached per (model, revision, dtype, evaluation sample, decoder
    settings) in the screen's folder: candidates that share a base model pay it once (a file lock
    makes a concurrent trial of the same base wait for the first instead of measuring again)."""
    import hashlib

    from filelock import FileLock

    from emoloom.atomic import atomic_write
    from emoloom.models import model_path
    from emoloom.train.loop import base_spec

    spec = base_spec(train_cfg)
    key = {"model": spec.model_dump(mode="json"), "revision": model_path(spec).revision, "sets": ctx.sets,
           "metric": ctx.metric, "eval": screen["eval"], "max_length": train_cfg.data.max_length,
           "decode": ctx.epoch_decode}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache = Path(ctx.trials_dir).parent / "zero_shot" / f"{digest}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):
        try:
            return json.loads(cache.read_text())["values"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not measured yet, or an unreadable entry: measure again
        signals = epoch_signals(ctx, screen, train_cfg, model, tokenizer, {}, epoch_rows, sample_rows)
        values = {"zero_shot.nll": signals["rung.nll"]}
        if "objective" in signals:
            values.update({"zero_shot.decoded": signals["objective"],
                           "zero_shot.parse_ok_rate": signals["epoch_dev_parse_ok_rate"]})
        with atomic_write(cache) as f:
            json.dump({"key": key | {"sets": "(the screen's evaluation sample)"}, "values": values}, f, indent=1)
        return values


def run_trial(config: dict, ctx: TrialContext) -> None:
    """The Tune trainable: one candidate from sampled `config` to MLflow and a final report.

    Everything MLflow should know goes through the trial's journal first, so a tracking outage
    neither fails the trial nor loses its results."""
    from ray import tune

    from emoloom.eval.run import evaluate
    from emoloom.journal import plain_reason
    from emoloom.models import dtype_name, model_path
    from emoloom.screen.sample import EvaluationSets
    from emoloom.train import fit
    from emoloom.train.examples import prepare_data
    from emoloom.versions import provenance

    # One "Checkpoint successfully created" line per trial and epoch is noise in the screen's log.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    trial_id = tune.get_context().get_trial_id()
    screen = ctx.screen
    params = dict(config)
    retrain = ctx.retrain.get(config.get("screen_trial")) if ctx.retrain else None
    if retrain is not None:  # a fidelity audit: a screen trial's config at a larger budget
        params = retrain["params"]
    out = Path(ctx.trials_dir) / f"trial_{trial_id}"
    journal = trial_journal(ctx, trial_id, params=params)
    if journal.status == "FINISHED" and "objective" in journal.view["metrics"]:
        # Finished after Tune's last snapshot of a killed driver: report again, never retrain.
        tune.report(tune_metrics(journal.view["metrics"]))
        return
    journal.reopen()
    started = time.time()
    timeout_s = screen.get("trial_timeout_s")
    watchdog = start_watchdog(timeout_s, journal) if timeout_s else None
    try:
        if retrain is not None:
            train_cfg = build_train_config(retrain["train"], {}, retrain["budget"], out / "train", screen["seed"])
            journal.set_tags({"emoloom.fidelity_of": config["screen_trial"],
                              "emoloom.budget": json.dumps(retrain["budget"])})
        else:
            train_cfg = build_train_config(screen["train"], ctx.fixed, params, out / "train", screen["seed"])
        journal.log_params(train_cfg.model_dump(mode="json"))
        sets = EvaluationSets.from_json(ctx.sets)
        dev, epoch_dev, cross = sets.dev, sets.epoch, sets.cross
        files = {**prepare_data(train_cfg).stats.get("sha256", {}), **sets.files}
        out.mkdir(parents=True, exist_ok=True)
        (out / "data_sha256.json").write_text(json.dumps(files, indent=1, sort_keys=True))
        journal.set_tags({"emoloom.base_model": train_cfg.model.name,
                          "emoloom.base_revision": str(model_path(train_cfg.model).revision),
                          "emoloom.train_precision": "bf16-autocast" if train_cfg.use_bf16() else "fp32",
                          "emoloom.eval_dtype": dtype_name(train_cfg.model),
                          "emoloom.train_config_hash": train_cfg.run_hash(),
                          "emoloom.data_sha256": _digest(files), **provenance()["tags"]})
        epoch_eval_s = 0.0

        def on_epoch(epoch: int, model, tokenizer, metrics: dict) -> dict:
            """Every rung signal after each epoch (screen/signals.py), and `rung_value`, the one
            ASHA compares; at epoch 0, before the first step, the zero-shot rung (logged, not
            reported). Captures only picklable values: under Ray Train it runs on the rank-0
            worker, where the model is."""
            nonlocal epoch_eval_s
            t_eval = time.time()
            was_training = model.training
            model.eval()
            try:
                if epoch == 0:
                    journal.log_metrics(zero_shot(ctx, screen, train_cfg, model, tokenizer, epoch_dev, dev), step=0)
                    extra = None
                else:
                    extra = epoch_signals(ctx, screen, train_cfg, model, tokenizer, metrics, epoch_dev, dev)
            finally:
                model.train(was_training)
            epoch_eval_s += time.time() - t_eval  # the zero-shot rung counts as evaluation too
            if extra is None:
                return {}
            # elapsed and evaluation seconds so far: the cost ledger of a trial ASHA stops here
            extra.update({"epoch": epoch, "elapsed_seconds": round(time.time() - started, 2),
                          "epoch_eval_seconds": round(epoch_eval_s, 2)})
            # `step` is MLflow's own axis: a metric of that name only confuses its charts
            logged = {("optimizer_steps" if k == "step" else k): v for k, v in metrics.items() if k != "epoch"}
            journal.log_metrics({**logged, **extra}, step=epoch)
            return extra

        callbacks = []
        if train_cfg.distributed.num_workers > 0:  # Ray Train workers: forward their reports to Tune
            from ray.tune.integration.ray_train import TuneReportCallback

            callbacks.append(TuneReportCallback())
        result = fit(train_cfg, callbacks=callbacks, storage_path=str(out / "ray"), epoch_hook=on_epoch)
        train_seconds = time.time() - started
        actors = screen["resources"]["eval_actors"]
        # (under Ray Train the hook ran on a worker: its count comes back with the epoch reports)
        final = {"train_seconds": round(train_seconds, 2),
                 "epoch_eval_seconds": round(result.last("epoch_eval_seconds", epoch_eval_s), 2)}
        dev_result = evaluate(_eval_config(screen, train_cfg, str(result.adapter), out / "dev", actors), dev,
                              log=lambda _msg: None)
        final.update(summarize(dev_result, "dev"))
        for name, records in cross.items():
            res = evaluate(_eval_config(screen, train_cfg, str(result.adapter), out / "cross" / name.replace("/", "_"),
                                        actors), records, log=lambda _msg: None)
            s = summarize(res, "cross")
            final.update({"cross.ekman_macro_f1": s["cross.ekman_macro_f1"],
                          "cross.parse_ok_rate": s["cross.parse_ok_rate"]} if len(cross) == 1 else
                         {f"cross.{name}.ekman_macro_f1": s["cross.ekman_macro_f1"]})
        final["eval_seconds"] = round(time.time() - started - train_seconds, 2)
        final["objective"] = objective_of(final, "dev", ctx.metric)
        epochs_done = int(result.last("epoch", train_cfg.epochs))
        final["epoch"] = epochs_done
        if result.last("rung_value") is not None:  # ASHA's metric in every report (Tune checks it)
            final["rung_value"] = result.last("rung_value")
        journal.log_metrics(final, step=epochs_done)
        journal.log_files([out / "dev" / "predictions.jsonl", out / "dev" / "metrics.json"], "dev")
        journal.log_files(sorted((out / "cross").glob("*")), "cross")
        journal.log_files([out / "train" / "config.yaml", out / "train" / "metrics.json", out / "data_sha256.json"])
        journal.log_files([result.adapter])
        journal.set_tags({"emoloom.status": "FINISHED"})
        journal.finish()
        tune.report(tune_metrics(final))
    except Exception as exc:
        journal.set_tags({"emoloom.status": "FAILED", "emoloom.traceback": traceback.format_exc()[-4000:]})
        journal.finish("FAILED", reason=plain_reason(exc))
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()
