"""How far a screen's ranking can be trusted, what a cheap model reaches, and what it cost.

From the per-row predictions of every finished trial and floor on the same evaluation sample:

* a paired bootstrap (`eval.paired`: the same resampled rows for every candidate) gives each
  trial's objective a 95% interval and its difference to the leader an interval; trials whose
  difference interval contains 0 are "tied with best", and the observed paired spread says
  about how many rows would separate rank 1 from rank 2;
* floors (`screen.floors`: majority label, TF-IDF + logistic regression, both with the training
  mean VAD) are rows of their own, never ranked; a trial whose whole interval lies below the
  TF-IDF floor is "below floor";
* the cost ledger (`screen.ledger`) adds up what the trials held.

The screen calls `screen_report` when it ends (from its journals); `python -m emoloom report`
rebuilds the same leaderboard from MLflow alone (`mlflow_report`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from emoloom import tracking
from emoloom.report import best_row, journal_views, latest_screen, rank_rows, run_view, write_report

__all__ = ["add_statistics", "ledger", "mlflow_report", "register", "screen_report"]

REPLICATES = 1000
FLOOR = "tfidf_lr"  # the floor a candidate must clear


def _empty(sentence: str) -> dict[str, Any]:
    return {"n_rows": None, "tie_group": [], "separation": None, "sentences": [sentence],
            "below_floor_best": None, "floor": None}


def add_statistics(rows: list[dict], predictions: dict[str, list[dict]], *, metric: str = "objective",
                   replicates: int = REPLICATES, seed: int = 0) -> dict[str, Any]:
    """Fill `ci95`, `diff_ci95`, `tied` and `below_floor` of the leaderboard rows (in place) from
    the prediction rows of each finished trial and floor ({trial: rows}, all on the same sample),
    and return the verdict: n_rows, tie_group (trial ids), separation (rank 1 vs 2, see
    `eval.paired.paired_bootstrap`), sentences (what the leaderboard prints under its table),
    below_floor_best, floor ({name, objective})."""
    from emoloom.eval.paired import paired_bootstrap

    if metric not in ("objective", "macro_f1_strict"):
        return _empty(f"Intervals are computed for the default objective only; this space ranks by {metric}.")
    candidates = [r for r in rows if r["role"] == "trial" and r["status"] == "FINISHED" and r["trial"] in predictions]
    floors = [r for r in rows if r["role"] == "floor" and r["trial"] in predictions]
    if not candidates:
        return _empty("No trial finished: there is no ranking to qualify.")
    stats = paired_bootstrap({r["trial"]: predictions[r["trial"]] for r in candidates},
                             replicates=replicates, seed=seed)
    for r in candidates:
        s = stats["trials"][r["trial"]]
        r.update(ci95=s["ci95"], diff_ci95=s["diff_ci95"], tied=s["tied"])
    if floors:  # their own intervals, from the same resampled rows (never a leader: computed apart)
        fstats = paired_bootstrap({r["trial"]: predictions[r["trial"]] for r in floors},
                                  replicates=replicates, seed=seed)
        for r in floors:
            r["ci95"] = fstats["trials"][r["trial"]]["ci95"]
    floor = next((r for r in floors if r["model"] == FLOOR), None)
    for r in candidates:
        r["below_floor"] = floor is not None and r["ci95"][1] < floor["objective"]

    n, rank = stats["n_rows"], {r["trial"]: r["rank"] for r in candidates}
    tied = sorted(rank[t] for t in stats["tie_group"])
    sep = stats["separation"]
    if len(candidates) == 1:
        sentences = [f"One trial finished; there is no runner-up to separate it from ({n} rows)."]
    elif len(tied) == 1:
        lo, hi = stats["trials"][sep["runner_up"]]["diff_ci95"]
        sentences = [f"Rank 1 is separated from rank 2 on {n} rows: difference {sep['mean_diff']:.4g}, "
                     f"95% interval [{lo:.4g}, {hi:.4g}] (paired bootstrap, {replicates} resamples)."]
    else:
        names = ", ".join(map(str, tied[:-1])) + f" and {tied[-1]}"
        more = (f"about {sep['n_needed']} rows would separate rank 1 from rank 2 (estimated as "
                f"n x (1.96 x sd / difference)^2 from the paired bootstrap's spread of their difference, "
                f"assuming the difference holds and the spread shrinks as 1/sqrt(rows))"
                if sep["n_needed"] else "ranks 1 and 2 score the same on every resample: no number of rows "
                                        "separates them")
        sentences = [f"Ranks {names} are not separated on {n} rows ({replicates} paired bootstrap resamples); "
                     f"{more}."]
    best = best_row(rows)
    below = bool(best and best.get("below_floor"))
    if floor is not None:
        under = [r for r in candidates if r["below_floor"]]
        sentences.append(f"TF-IDF floor: objective {floor['objective']:.4g}; "
                         + ("the best candidate is below it: none of these candidates beats a bag-of-words "
                            "classifier on these rows." if below else
                            f"{len(under)} of {len(candidates)} finished trials lie below it."))
    return {"n_rows": n, "tie_group": stats["tie_group"], "separation": sep, "sentences": sentences,
            "below_floor_best": below if floor is not None else None,
            "floor": {"name": FLOOR, "objective": floor["objective"]} if floor is not None else None}


def ledger(rows: list[dict], demand: dict[str, float], max_t: int) -> dict[str, Any]:
    """The cost ledger of the finished and stopped trials (failed ones have no reliable time),
    each holding `demand` ({"CPU", "GPU"}: `plan.trial_demand`) for its wall time."""
    from emoloom.screen.ledger import cost_ledger

    trials = {r["trial"]: {"train_s": max(0.0, r["train_s"]), "epoch_eval_s": r["epoch_eval_s"],
                           "final_eval_s": r["final_eval_s"], "cpus": demand["CPU"], "gpus": demand["GPU"],
                           "epochs_done": int(r["rung"] or 0), "finished": r["status"] == "FINISHED"}
              for r in rows if r["role"] == "trial" and r["status"] in ("FINISHED", "STOPPED")
              and r["train_s"] is not None}
    return cost_ledger(trials, max_t)


def _predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def screen_report(trials_dir: Path, out: Path, *, mode: str, metric: str, searched: list[str],
                  seed: int = 0) -> dict[str, Any]:
    """The report a screen writes when it ends, from its journals and trial folders."""
    views = journal_views(trials_dir)
    rows = rank_rows(views, mode, searched)
    predictions = {r["trial"]: _predictions(Path(r["folder"]) / "dev" / "predictions.jsonl") for r in rows
                   if r["status"] in ("FINISHED", "FLOOR") and (Path(r["folder"]) / "dev" / "predictions.jsonl").is_file()}
    verdict = add_statistics(rows, predictions, metric=metric, seed=seed)
    best = best_row(rows)
    metrics = None
    if best is not None:
        metrics = next(v["metrics"] for v in views if v["folder"] == best["folder"])
    report = write_report(rows, out, searched=searched, verdict=verdict["sentences"], best_metrics=metrics,
                          best_predictions=Path(best["folder"]) / "dev" / "predictions.jsonl" if best else None)
    return {**report, "verdict": verdict}


def mlflow_report(c, experiment_id: str, parent, out: Path) -> dict[str, Any]:
    """The report of a screen from MLflow alone: its parent run, trial and floor runs and their
    dev predictions (downloaded)."""
    p = parent.data.params
    mode, metric = p.get("space.mode", "max"), p.get("space.metric", "objective")
    searched = [k for k in p.get("space.params", "").split(",") if k]
    children = [r for r in tracking.child_runs(c, experiment_id, parent.info.run_id)
                if r.data.tags.get(tracking.ROLE_TAG) != "fidelity"]  # an audit's retraining is no candidate
    rows = rank_rows([run_view(r) for r in children], mode, searched)
    predictions = {}
    for r in rows:
        if r["status"] in ("FINISHED", "FLOOR"):
            try:
                local = c.download_artifacts(r["run_id"], "dev/predictions.jsonl", str(out / "_runs" / r["trial"]))
            except Exception:  # noqa: BLE001 - a run without predictions gets no interval
                continue
            predictions[r["trial"]] = _predictions(Path(local))
    verdict = add_statistics(rows, predictions, metric=metric, seed=int(p.get("screen.seed", 0)))
    best = best_row(rows)
    metrics = c.get_run(best["run_id"]).data.metrics if best else None
    report = write_report(rows, out, searched=searched, verdict=verdict["sentences"], best_metrics=metrics,
                          best_predictions=out / "_runs" / best["trial"] / "predictions.jsonl" if best else None)
    return {**report, "verdict": verdict}


def register(sub) -> None:
    p = sub.add_parser("report", help="rebuild a screen's leaderboard, intervals and plots from MLflow")
    p.add_argument("--experiment", required=True)
    p.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else runs/mlflow.db")
    p.add_argument("--out", default=None, help="output folder (default runs/report-<experiment>)")
    p.add_argument("--storage", default="runs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    uri = tracking.resolve_tracking_uri(args.tracking_uri, args.storage)
    c = tracking.client(uri)
    exp_id, parent = latest_screen(c, args.experiment)
    out = Path(args.out or Path(args.storage) / f"report-{args.experiment}")
    result = mlflow_report(c, exp_id, parent, out)
    print((out / "leaderboard.md").read_text())
    for path in result["files"]:
        print(f"wrote {path}")
    return 0
