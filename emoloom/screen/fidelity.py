"""Fidelity audit: how well a screen's cheap ranking predicts full training.

    python -m emoloom fidelity --experiment emoloom-screen [--screen HASH] [--top 3] [--random 2] [--budget-x 4]

or a `fidelity:` section in the screen config (run when the screen ends). The audit picks the
screen's top K finished trials plus M others at random (ASHA-stopped ones included), retrains
each with its own training config at X times the training budget (epochs x X with the same steps
per epoch, or max_steps x X when the trial sets max_steps) through the screen's own Tune trial
function (resumable: a killed audit continues and never retrains a finished audit trial; runs
tagged emoloom.role=fidelity under the screen's run), evaluates each on the screen's evaluation
sample, and compares:

* `kendall_tau`, `spearman`: the screen's order (finished trials above ASHA-stopped ones, each by
  objective, ties kept) against the full-budget objective (scipy.stats, tie-corrected); 95% intervals from scipy.stats.bootstrap over the
  audited trials (from 4 trials on);
* `top1_agreement`: 1 when the screen's pick has the best full-budget objective (a tie counts);
* `regret`: the best full-budget objective minus that of the screen's pick, with a 95% interval
  from a bootstrap over the evaluation rows (default objective only, as the leaderboard's);
* per rung signal (screen/signals.py) and epoch: the rank correlation of the screen trials'
  signal at that epoch with the full-budget objective.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from emoloom import tracking

__all__ = ["audit", "budget_overrides", "correlation", "rank_agreement", "regret_bootstrap", "screen_scores", "select",
           "signal_correlations"]

REPLICATES = 1000


# -- statistics --------------------------------------------------------------------------------

def _finite(x: float) -> float | None:
    return round(float(x), 4) if x is not None and math.isfinite(x) else None


def correlation(kind: str, x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall tau-b (`kind` "kendall") or Spearman rho of x and y (scipy.stats); nan when a side is constant."""
    import warnings

    from scipy import stats

    f = stats.kendalltau if kind == "kendall" else stats.spearmanr
    with warnings.catch_warnings():  # a constant side gives nan, which the callers handle
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(f(x, y).statistic)


def screen_scores(rows: Sequence[dict], sense: float) -> list[int]:
    """The screen's order of leaderboard rows as scores (larger is better) that keep its ties:
    finished trials above ASHA-stopped ones, each by objective (a stopped trial's is its last rung
    value). Equal objectives share a score, so a tie the screen did not break counts as one."""
    keys = [(r["status"] == "FINISHED", sense * r["objective"]) for r in rows]
    order = sorted(set(keys))
    return [order.index(k) for k in keys]


def rank_agreement(screen_score: Sequence[float], full: Sequence[float], *, pick: int,
                   replicates: int = REPLICATES, seed: int = 0) -> dict[str, Any]:
    """Agreement of the screen's scores (larger is better, e.g. minus its ranks) with the
    full-budget objective (larger is better) over the audited trials; `pick` indexes the
    screen's choice. Returns kendall_tau, spearman (None when either side is constant), their
    95% bootstrap intervals over trials (None below 4 trials; a resample with a constant side
    carries no order and counts as 0), top1_agreement and regret."""
    import numpy as np
    from scipy import stats

    x, y = np.asarray(screen_score, float), np.asarray(full, float)
    out: dict[str, Any] = {"n": len(x)}
    for kind, key in (("kendall", "kendall_tau"), ("spearman", "spearman")):
        value = correlation(kind, x, y) if len(x) > 1 else float("nan")
        out[key] = _finite(value)
        out[f"{key}_ci95"] = None
        if len(x) >= 4 and out[key] is not None:
            def stat(a, b, kind=kind):
                v = correlation(kind, a, b)
                return v if math.isfinite(v) else 0.0

            res = stats.bootstrap((x, y), stat, paired=True, vectorized=False, n_resamples=replicates,
                                  method="percentile", rng=np.random.default_rng(seed))
            out[f"{key}_ci95"] = [_finite(res.confidence_interval.low), _finite(res.confidence_interval.high)]
    best = float(y.max())
    out["top1_agreement"] = 1.0 if y[pick] >= best else 0.0
    out["regret"] = _finite(best - y[pick])
    out["pick_full_rank"] = int(1 + (y > y[pick]).sum())  # 1 = the full-budget best (ties share it)
    return out


def regret_bootstrap(predictions: Mapping[str, Sequence[dict]], pick: str, *, replicates: int = REPLICATES,
                     seed: int = 0) -> dict[str, Any]:
    """Regret of `pick` and how often it is the best, over resamples of the evaluation rows (the
    same rows for every audited trial: `eval.paired`'s pairing), for the default objective."""
    import numpy as np

    from emoloom.eval.paired import align_rows, strict_macro_f1

    ids, aligned = align_rows(predictions)
    names = list(aligned)
    n = len(ids)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(float)
    scores = np.stack([strict_macro_f1(aligned[name])(weights) for name in names])  # trials x replicates
    regret = scores.max(axis=0) - scores[names.index(pick)]
    lo, hi = np.percentile(regret, [2.5, 97.5])
    return {"regret_ci95": [_finite(lo), _finite(hi)], "top1_share": _finite(float(np.mean(regret <= 0))),
            "rows": n, "replicates": replicates}


def signal_correlations(histories: Mapping[str, Mapping[int, Mapping[str, float]]], full: Mapping[str, float],
                        mode: str) -> list[dict[str, Any]]:
    """Per rung signal and epoch: Kendall tau and Spearman rho of the screen trials' signal at
    that epoch (turned so that larger is better) with their full-budget objective (larger is
    better), over the audited trials that reached the epoch. histories: {trial: {epoch: {signal:
    value}}}."""
    from emoloom.screen.signals import SIGNALS, oriented

    sense = 1.0 if mode == "max" else -1.0
    out = []
    epochs = sorted({e for h in histories.values() for e in h})
    for name in SIGNALS:
        for epoch in epochs:
            have = [t for t in full if name in histories.get(t, {}).get(epoch, {})]
            x = [sense * oriented(histories[t][epoch][name], name, mode) for t in have]
            y = [full[t] for t in have]
            x = [v if math.isfinite(v) else -1e30 for v in x]
            row = {"signal": name, "epoch": epoch, "n": len(have), "kendall_tau": None, "spearman": None}
            if len(have) > 1:
                row.update(kendall_tau=_finite(correlation("kendall", x, y)), spearman=_finite(correlation("spearman", x, y)))
            out.append(row)
    return out


# -- choosing and retraining -------------------------------------------------------------------

def select(rows: Sequence[dict], top: int, others: int, seed: int) -> list[dict[str, str]]:
    """The screen's top `top` finished trials (leaderboard order) plus `others` drawn at random,
    seeded, from the remaining finished and ASHA-stopped ones: [{trial, why}] in that order."""
    ranked = [r for r in rows if r["role"] == "trial" and r["status"] in ("FINISHED", "STOPPED")
              and r.get("objective") is not None]
    best = [r["trial"] for r in ranked if r["status"] == "FINISHED"][:top]
    rest = sorted(r["trial"] for r in ranked if r["trial"] not in best)
    drawn = random.Random(f"emoloom-fidelity/{seed}").sample(rest, min(others, len(rest)))
    return [{"trial": t, "why": "top"} for t in best] + [{"trial": t, "why": "random"} for t in drawn]


def budget_overrides(train: Mapping[str, Any], x: float) -> dict[str, int]:
    """The training keys that make `train` (a training config) X times as long."""
    if train.get("max_steps"):
        return {"max_steps": max(1, round(train["max_steps"] * x))}
    return {"epochs": max(1, round(train["epochs"] * x))}


def epoch_histories(journal_path: Path) -> dict[int, dict[str, float]]:
    """{epoch: {signal: value}} from a screen trial's journal (its per-epoch metric records)."""
    state = json.loads(journal_path.read_text())
    out: dict[int, dict[str, float]] = {}
    for op in state["ops"]:
        if op["op"] != "metrics":
            continue
        m = op["metrics"]
        values = {k.removeprefix("rung."): v for k, v in m.items() if k.startswith("rung.")}
        if not values and "epoch_dev_parse_ok_rate" in m:  # screens from before rung signals: decoded only
            values = {"decoded": m["objective"]}
        if values:
            out.setdefault(int(op["step"]), {}).update(values)
    return out


def _scaled_budget(train: Mapping[str, Any], budget: Mapping[str, int]) -> str:
    key = next(iter(budget))
    return f"{key} {train.get(key)} -> {budget[key]}" + (
        f" ({train.get('steps_per_epoch') or 'all'} steps per epoch)" if key == "epochs" else "")


def saved_sample(exp_dir: Path) -> dict[str, Any]:
    """The screen's eval_sample.json (the audit must draw the same sample); a file that is
    missing or cut short stops the audit with one line naming it, not a traceback."""
    path = Path(exp_dir) / "eval_sample.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(saved, dict) or not isinstance(saved.get("sha256"), str):
            raise ValueError("no sha256 of the sample in it")
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:200]
        raise SystemExit(f"fidelity: {path}: cannot read the screen's evaluation sample ({why}); the audit compares "
                         f"against it") from None
    return saved


def audit(cfg, space, exp_dir: Path, options, *, screen_wall_s: float | None = None,
          log=None) -> dict[str, Any]:
    """Run (or resume) the fidelity audit of the screen in `exp_dir` and log it on the screen's
    run; returns what it wrote to fidelity.json (plus `paragraph`, the verdict)."""
    import yaml
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from emoloom.journal import JOURNAL, RunJournal
    from emoloom.report import journal_views, rank_rows
    from emoloom.screen.run import init_ray, reconcile, replay, screen_sets, trial_dirname, write_json
    from emoloom.screen.trial import TrialContext, run_trial

    log = log or (lambda msg: print(msg, file=sys.stderr))
    t0 = time.time()
    exp_dir = Path(exp_dir).resolve()
    x = options.budget_x
    storage = Path(cfg.storage).resolve()
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, storage)
    parent = RunJournal.load(exp_dir / JOURNAL, uri)
    if not parent.run_id and not parent.sync(force=True):
        raise SystemExit(f"the screen's MLflow run is not there yet ({parent.state['last_error']}); "
                         f"rerun when MLflow answers")
    digest = parent.state["key_tags"][tracking.SCREEN_TAG]
    rows = rank_rows(journal_views(exp_dir / "trials"), space.mode, list(space.params))
    chosen = select(rows, options.top, options.random, cfg.seed)
    if len(chosen) < 2:
        raise SystemExit(f"fidelity: {len(chosen)} finished or stopped trial(s) in {exp_dir}; an audit compares "
                         f"at least 2")
    retrain = {}
    for item in chosen:
        tid = item["trial"]
        train = yaml.safe_load((exp_dir / "trials" / f"trial_{tid}" / "train" / "config.yaml").read_text())
        tune_params = exp_dir / f"trial_{tid}" / "params.json"  # what the searcher sampled (Tune's record)
        params = json.loads(tune_params.read_text()) if tune_params.is_file() else {}
        retrain[tid] = {"train": train, "budget": budget_overrides(train, x), "params": params}
    audit_dir = exp_dir / "fidelity" / f"x{x:g}-top{options.top}-random{options.random}"
    if (audit_dir / "fidelity.json").is_file():  # this audit ran to its end: report it, retrain nothing
        log(f"the fidelity audit in {audit_dir} already ran to its end; its results are kept as they are")
        return json.loads((audit_dir / "fidelity.json").read_text())
    saved = saved_sample(exp_dir)  # before anything is written or retrained
    audit_dir.mkdir(parents=True, exist_ok=True)
    write_json(audit_dir / "selection.json", {"chosen": chosen, "budget_x": x,
                                              "budget": {t: r["budget"] for t, r in retrain.items()}})

    sets = screen_sets(cfg, space)
    if sets.manifest["sha256"] != saved["sha256"]:
        raise SystemExit("fidelity: the evaluation sample drawn now differs from the screen's (eval_sample.json): "
                         "the data changed since the screen ran")
    sets.cross = {}  # the audit compares the evaluation sample's objective only
    ctx = TrialContext(tracking_uri=uri, experiment_id=parent.state["experiment_id"], parent_run_id=parent.run_id,
                       screen_hash=digest, screen=cfg.model_dump(mode="json"), metric=space.metric, mode=space.mode,
                       trials_dir=str(audit_dir / "trials"), sets=sets.to_json(), rung_signal=space.asha.signal,
                       role="fidelity", epoch_decode=False, retrain=retrain)
    init_ray(cfg)
    # as for the screen: a trial started after Tune's last snapshot would otherwise be forgotten
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    driver = {"cpu": cfg.resources.driver_cpus}
    if cfg.resources.driver_resource:
        driver[cfg.resources.driver_resource] = 1
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), driver)
    name = "tune"
    if tune.Tuner.can_restore(str(audit_dir / name)):
        log(f"resuming the fidelity audit in {audit_dir}")
        tuner = tune.Tuner.restore(str(audit_dir / name), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        tuner = tune.Tuner(
            trainable, param_space={"screen_trial": tune.grid_search([c["trial"] for c in chosen])},
            tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True,  # as the screen (run.py)
                                        trial_dirname_creator=trial_dirname,
                                        max_concurrent_trials=options.max_concurrent or space.max_concurrent),
            run_config=tune.RunConfig(name=name, storage_path=str(audit_dir),
                                      failure_config=tune.FailureConfig(max_failures=0),
                                      callbacks=[CSVLoggerCallback(), JsonLoggerCallback()], verbose=1))
    grid = tuner.fit()
    reconcile(ctx, grid)
    pending = replay(audit_dir / "trials")

    # -- what the audit found --
    full, runs, predictions = {}, {}, {}
    for view in journal_views(audit_dir / "trials"):
        of = view["tags"].get("emoloom.fidelity_of")
        if view["status"] == "FINISHED" and of in retrain and "objective" in view["metrics"]:
            full[of], runs[of] = view["metrics"]["objective"], view["run_id"]
            path = Path(view["folder"]) / "dev" / "predictions.jsonl"
            if path.is_file():
                predictions[of] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_trial = {r["trial"]: r for r in rows}
    audited = [c["trial"] for c in chosen if c["trial"] in full]
    missing = [c["trial"] for c in chosen if c["trial"] not in full]
    if len(audited) < 2:
        raise SystemExit(f"fidelity: only {len(audited)} audit trial(s) finished (failed: {missing}); see "
                         f"{audit_dir / 'trials'}")
    sense = 1.0 if space.mode == "max" else -1.0
    pick = min(audited, key=lambda t: by_trial[t]["rank"])  # the screen's choice among the audited
    stats = rank_agreement(screen_scores([by_trial[t] for t in audited], sense), [sense * full[t] for t in audited],
                           pick=audited.index(pick), seed=cfg.seed)
    rows_boot = None
    if space.metric in ("objective", "macro_f1_strict") and set(audited) <= set(predictions):
        rows_boot = regret_bootstrap({t: predictions[t] for t in audited}, pick, seed=cfg.seed)
    histories = {t: epoch_histories(exp_dir / "trials" / f"trial_{t}" / JOURNAL) for t in audited}
    per_signal = signal_correlations(histories, {t: sense * full[t] for t in audited}, space.mode)
    winner = max(audited, key=lambda t: (sense * full[t], -by_trial[t]["rank"]))
    wall = round(time.time() - t0, 1)
    result = {
        "screen": exp_dir.name, "budget_x": x, "budget": _scaled_budget(retrain[pick]["train"], retrain[pick]["budget"]),
        "rung_signal": space.asha.signal, "grace_period": space.asha.grace_period, "metric": space.metric,
        "mode": space.mode, "chosen": chosen, "failed": missing, "pick": pick, "full_budget_winner": winner,
        **stats, **(rows_boot or {"regret_ci95": None, "top1_share": None}),
        "trials": [{"trial": t, "why": next(c["why"] for c in chosen if c["trial"] == t),
                    "screen_rank": by_trial[t]["rank"], "screen_status": by_trial[t]["status"],
                    "screen_objective": by_trial[t]["objective"], "full_objective": full[t], "run_id": runs[t],
                    "rungs": histories[t]} for t in audited],
        "per_signal": per_signal, "wall_s": wall, "screen_wall_s": screen_wall_s,
        "extra_wall_share": round(wall / screen_wall_s, 3) if screen_wall_s else None,
        "pending_tracking": pending,
    }
    result["paragraph"] = paragraph(result)
    write_json(audit_dir / "fidelity.json", result)
    (audit_dir / "fidelity.md").write_text(markdown(result))
    plot = scatter(result, audit_dir / "fidelity.png")
    parent.log_metrics(parent_metrics(result))
    parent.set_tags({"emoloom.fidelity": result["paragraph"]})
    parent.log_files([audit_dir / "fidelity.json", audit_dir / "fidelity.md", plot], artifact_path="fidelity")
    if options.register_winner:
        result["registered_version"] = register_winner(cfg, uri, runs[winner])
    return result


def parent_metrics(result: dict) -> dict[str, float]:
    m: dict[str, float] = {"fidelity.n_trials": result["n"], "fidelity.budget_x": result["budget_x"],
                           "fidelity.wall_s": result["wall_s"]}
    for key in ("kendall_tau", "spearman", "regret"):
        if result[key] is not None:
            m[f"fidelity.{key}"] = result[key]
        if result.get(f"{key}_ci95"):
            m[f"fidelity.{key}_ci_low"], m[f"fidelity.{key}_ci_high"] = result[f"{key}_ci95"]
    m["fidelity.top1_agreement"] = result["top1_agreement"]
    if result["top1_share"] is not None:
        m["fidelity.top1_share"] = result["top1_share"]
    if result["extra_wall_share"] is not None:
        m["fidelity.extra_wall_share"] = result["extra_wall_share"]
    for row in result["per_signal"]:
        for key in ("kendall_tau", "spearman"):
            if row[key] is not None:
                m[f"fidelity.rung.{row['signal']}.epoch{row['epoch']}.{key}"] = row[key]
    return m


def _ci(ci) -> str:
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and None not in ci else ""


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def paragraph(r: dict) -> str:
    """The audit's one-paragraph verdict."""
    n = r["n"]
    where = ("is the full-budget best" if r["pick_full_rank"] == 1 else
             f"is rank {r['pick_full_rank']} of {n} at full budget (the best is trial {r['full_budget_winner']})")
    text = (f"At {r['budget_x']:g}x the screen's training budget ({r['budget']}), the screen's pick "
            f"(trial {r['pick']}) {where}; regret {_num(r['regret'])}{_ci(r['regret_ci95'])}"
            + (f" (the pick is best on {r['top1_share']:.0%} of row resamples)" if r["top1_share"] is not None else "")
            + f"; Kendall tau {_num(r['kendall_tau'])}{_ci(r['kendall_tau_ci95'])}, Spearman "
              f"{_num(r['spearman'])}{_ci(r['spearman_ci95'])} over {n} trials "
              f"({sum(t['why'] == 'top' for t in r['trials'])} top, {sum(t['why'] == 'random' for t in r['trials'])} "
              f"at random).")
    scored = [row for row in r["per_signal"] if row["spearman"] is not None and row["n"] >= 3]
    if scored:
        best = max(scored, key=lambda row: (row["spearman"], -row["epoch"]))
        chosen = [row for row in scored if row["signal"] == r["rung_signal"] and row["epoch"] == r["grace_period"]]
        text += (f" Best rung signal here: {best['signal']} at epoch {best['epoch']} (Spearman {best['spearman']:.2f}"
                 f", n={best['n']})")
        if chosen:
            text += (f"; the screen's own, {r['rung_signal']} at its first rung (epoch {r['grace_period']}): "
                     f"{chosen[0]['spearman']:.2f}")
        text += "."
    if n < 5:
        text += f" With {n} trials the correlations can move a lot; audit more (--top/--random) to narrow them."
    text += f" The audit took {r['wall_s']:.0f} s" + (
        f", {r['extra_wall_share']:.0%} of the screen's wall time." if r["extra_wall_share"] else ".")
    if r["failed"]:
        text += f" Not audited (retraining failed): {', '.join(r['failed'])}."
    return text


def markdown(r: dict) -> str:
    lines = [f"## Fidelity of {r['screen']} at {r['budget_x']:g}x", "", r["paragraph"], "",
             "| trial | why | screen rank | screen status | screen objective | full-budget objective |",
             "|---|---|---|---|---|---|"]
    for t in sorted(r["trials"], key=lambda t: t["screen_rank"]):
        lines.append(f"| {t['trial']} | {t['why']} | {t['screen_rank']} | {t['screen_status']} | "
                     f"{_num(t['screen_objective'])} | {t['full_objective']:.4f} |")
    lines += ["", "| rung signal | epoch | n | Kendall tau | Spearman |", "|---|---|---|---|---|"]
    for row in r["per_signal"]:
        lines.append(f"| {row['signal']} | {row['epoch']} | {row['n']} | {_num(row['kendall_tau'])} | "
                     f"{_num(row['spearman'])} |")
    return "\n".join(lines) + "\n"


def scatter(r: dict, path: Path) -> Path:
    """Screen objective vs full-budget objective (left), the rung signal at each epoch vs the
    full-budget objective (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from emoloom.report import _save

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for status, marker in (("FINISHED", "o"), ("STOPPED", "x")):
        pts = [t for t in r["trials"] if t["screen_status"] == status]
        left.scatter([t["screen_objective"] for t in pts], [t["full_objective"] for t in pts], marker=marker,
                     label="finished" if status == "FINISHED" else "stopped by ASHA (last rung value)")
    pick = next(t for t in r["trials"] if t["trial"] == r["pick"])
    left.scatter([pick["screen_objective"]], [pick["full_objective"]], s=160, facecolors="none", edgecolors="red",
                 label="screen's pick")
    left.set_xlabel("screen objective")
    left.set_ylabel(f"objective at {r['budget_x']:g}x budget")
    left.set_title(f"tau {_num(r['kendall_tau'])}, regret {_num(r['regret'])}")
    left.legend(fontsize=7)
    signal = r["rung_signal"]
    epochs = sorted({int(e) for t in r["trials"] for e, v in t["rungs"].items() if signal in v})
    for e in epochs:
        pts = [(t["rungs"].get(e, t["rungs"].get(str(e), {})).get(signal), t["full_objective"]) for t in r["trials"]]
        pts = [(a, b) for a, b in pts if a is not None]
        right.scatter([a for a, _ in pts], [b for _, b in pts], label=f"epoch {e}")
    right.set_xlabel(f"rung signal {signal}" + (" (lower is better)" if signal == "nll" else ""))
    right.set_ylabel(f"objective at {r['budget_x']:g}x budget")
    right.legend(fontsize=7)
    return _save(fig, path)


def register_winner(cfg, uri: str, run_id: str) -> str | None:
    """Point the registered model's `best` alias at the full-budget winner's retrained adapter."""
    from emoloom.screen.run import register

    version = register(tracking.client(uri), cfg, {"run_id": run_id})
    if version is not None:
        tracking.client(uri).set_model_version_tag(cfg.mlflow.registered_model, version, "emoloom.fidelity_winner",
                                                   "true")
    return version


# -- command line --------------------------------------------------------------------------------

def load_screen(exp_dir: Path):
    """(ScreenConfig, SearchSpace) of a screen's folder, as it ran (paths already resolved)."""
    import yaml

    from emoloom.screen.config import ScreenConfig
    from emoloom.screen.space import SearchSpace, load_space

    cfg = ScreenConfig.model_validate(yaml.safe_load((exp_dir / "screen.yaml").read_text()))
    saved = exp_dir / "space.yaml"
    space = SearchSpace.model_validate(yaml.safe_load(saved.read_text())) if saved.is_file() else load_space(cfg.space)
    return cfg, space


def register(sub) -> None:
    p = sub.add_parser("fidelity", help="retrain a finished screen's top and random trials at a larger budget and "
                                        "measure how well the screen's ranking predicted them")
    p.add_argument("--experiment", required=True, help="the MLflow experiment of the screen")
    p.add_argument("--screen", default=None, help="the screen's config hash (a prefix will do); default: the latest")
    p.add_argument("--top", type=int, default=None, help="top finished trials to retrain (default 3)")
    p.add_argument("--random", type=int, default=None, help="other trials drawn at random, stopped ones included "
                                                            "(default 2)")
    p.add_argument("--budget-x", type=float, default=None, help="times the screen's training budget (default 4)")
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--register-winner", action="store_true", help="move the `best` alias to the full-budget winner")
    p.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else <storage>/mlflow.db")
    p.add_argument("--storage", default="runs", help="the screen's storage folder (default runs)")
    p.set_defaults(func=run)


def find_screen(c, experiment: str, prefix: str | None):
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment named {experiment!r}")
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.ROLE_TAG}` = 'screen'",
                         max_results=1000, order_by=["attributes.start_time DESC"])
    if prefix:
        runs = [r for r in runs if r.data.tags.get(tracking.SCREEN_TAG, "").startswith(prefix)]
    if not runs:
        raise SystemExit(f"experiment {experiment!r} holds no screen run" + (f" with hash {prefix}*" if prefix else ""))
    return runs[0]


def run(args: argparse.Namespace) -> int:
    from emoloom.screen.config import FidelityOptions

    storage = Path(args.storage)
    uri = tracking.resolve_tracking_uri(args.tracking_uri, storage)
    c = tracking.client(uri)
    screen = find_screen(c, args.experiment, args.screen)
    exp_dir = storage / screen.info.run_name
    if not (exp_dir / "screen.yaml").is_file():
        raise SystemExit(f"{exp_dir}: not the screen's folder (the audit retrains from its trials' configs); "
                         f"pass --storage")
    cfg, space = load_screen(exp_dir)
    given = {k: v for k, v in {"top": args.top, "random": args.random, "budget_x": args.budget_x,
                               "max_concurrent": args.max_concurrent}.items() if v is not None}
    base = (cfg.fidelity or FidelityOptions()).model_dump()
    options = FidelityOptions.model_validate({**base, **given,
                                              "register_winner": args.register_winner or base["register_winner"]})
    cfg = cfg.model_copy(update={"storage": str(storage),
                                 "mlflow": cfg.mlflow.model_copy(update={"tracking_uri": uri})})
    summary = exp_dir / "summary.json"
    wall = json.loads(summary.read_text()).get("wall_s") if summary.is_file() else None
    result = audit(cfg, space, exp_dir, options, screen_wall_s=wall)
    print((exp_dir / "fidelity" / f"x{options.budget_x:g}-top{options.top}-random{options.random}"
           / "fidelity.md").read_text())
    return 0 if result else 1
