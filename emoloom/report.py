"""Leaderboard and plots of a screen.

`python -m emoloom report --experiment NAME` rebuilds them from MLflow alone: the latest screen
(parent run) of an experiment, its trial runs and the best trial's artifacts. The screen itself
writes the same files when it ends from its trials' journals (`journal_report`), so an
unreachable tracking server cannot stop it from reporting.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

from emoloom import tracking

# leaderboard column -> MLflow metric key of a trial run
COLUMNS = {
    "objective": "objective",
    "macro_f1": "dev.macro_f1",
    "macro_recall": "dev.macro_recall",
    "parse_ok": "dev.parse_ok_rate",
    "vad_1mrmse": "dev.vad_1mrmse",
    "cross_ekman_f1": "cross.ekman_macro_f1",
    "train_s": "train_seconds",
}


def run_view(run) -> dict[str, Any]:
    """An MLflow run as the report reads it (the same shape as a journal's view)."""
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
            "metrics": dict(run.data.metrics), "tags": dict(run.data.tags), "params": dict(run.data.params)}


def rank_rows(views: list[dict[str, Any]], mode: str = "max") -> list[dict[str, Any]]:
    """One leaderboard row per trial, ranked by objective (failed and stopped trials last).

    Trials interrupted with a killed driver before Tune recorded them (status INTERRUPTED) are
    not candidates: their configuration never ran to an end, so they get no row."""
    rows = []
    for view in views:
        m, tags = view["metrics"], view["tags"]
        status = tags.get("emoloom.status", view["status"])
        if status == "INTERRUPTED":
            continue
        rows.append({
            "trial": tags.get(tracking.TRIAL_TAG, view.get("run_name")),
            "run_id": view.get("run_id"),
            "status": status,
            "model": view["params"].get("model.name", ""),
            **{col: m.get(key) for col, key in COLUMNS.items()},
            "note": tags.get("emoloom.failure", ""),
        })
    sign = -1 if mode == "max" else 1

    def key(row):
        ok = row["status"] == "FINISHED" and row["objective"] is not None and math.isfinite(row["objective"])
        return (0 if ok else 1, sign * row["objective"] if ok else 0.0, row["trial"])

    rows.sort(key=key)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def trial_rows(c, experiment_id: str, parent_run_id: str, mode: str = "max") -> list[dict[str, Any]]:
    """The leaderboard rows of a screen, read from MLflow."""
    return rank_rows([run_view(r) for r in tracking.child_runs(c, experiment_id, parent_run_id)], mode)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value == value else "nan"
    # one table row per trial: no line breaks or column separators from error messages
    return "" if value is None else " ".join(str(value).split()).replace("|", "\\|")


def write_tables(rows: list[dict], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    fields = ["rank", "trial", "status", "model", *COLUMNS, "note", "run_id"]
    csv_path = out / "leaderboard.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    md_path = out / "leaderboard.md"
    lines = ["| " + " | ".join(fields[:-1]) + " |", "|" + "---|" * (len(fields) - 1)]
    lines += ["| " + " | ".join(_fmt(r.get(f)) for f in fields[:-1]) + " |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated in (lower cost x, higher score y)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return front


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(rows: list[dict], out: Path, best_metrics: dict[str, float] | None = None,
                best_pairs: list | None = None) -> list[Path]:
    """The screen's plots; `best_metrics` (the best trial's metrics, for per-label F1) and
    `best_pairs` (its (target, predicted) VAD) come from MLflow or from the trial's folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    done = [r for r in rows if r["objective"] is not None and r["status"] == "FINISHED"]

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ordered = sorted(rows, key=lambda r: r["trial"])
    ax.bar(range(len(ordered)), [r["objective"] or 0.0 for r in ordered],
           color=["tab:blue" if r in done else "tab:gray" for r in ordered])
    ax.set_xticks(range(len(ordered)), [r["trial"][-8:] for r in ordered], rotation=60, fontsize=7)
    ax.set_ylabel("objective")
    ax.set_title("Objective per trial (gray: failed or stopped)")
    paths.append(_save(fig, out / "objective_per_trial.png"))

    timed = [r for r in done if r["macro_f1"] is not None and r["train_s"] is not None]
    fig, ax = plt.subplots(figsize=(5, 4))
    if timed:
        pts = [(r["train_s"], r["macro_f1"]) for r in timed]
        front = set(pareto_front(pts))
        ax.scatter(*zip(*pts), c=["tab:red" if i in front else "tab:blue" for i in range(len(pts))])
        fx = sorted(pts[i] for i in front)
        ax.plot([p[0] for p in fx], [p[1] for p in fx], "r--", lw=1, label="Pareto front")
        ax.legend()
    ax.set_xlabel("training seconds")
    ax.set_ylabel("dev Macro-F1")
    ax.set_title("Macro-F1 vs training time")
    paths.append(_save(fig, out / "f1_vs_train_seconds.png"))

    if done:
        best = done[0]
        per_label = {k.split(".")[-1]: v for k, v in (best_metrics or {}).items()
                     if k.startswith("dev.per_label_f1.")}
        fig, ax = plt.subplots(figsize=(7, 3.5))
        names = sorted(per_label)
        ax.bar(range(len(names)), [per_label[n] for n in names])
        ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
        ax.set_ylabel("F1")
        ax.set_title(f"Per-label F1 of the best trial ({best['trial']})")
        paths.append(_save(fig, out / "best_per_label_f1.png"))

        pairs = best_pairs or []
        fig, axes = plt.subplots(1, 3, figsize=(9, 3))
        for i, (ax, dim) in enumerate(zip(axes, "vad")):
            if pairs:
                ax.scatter([p[0][i] for p in pairs], [p[1][i] for p in pairs], s=6, alpha=0.6)
            ax.plot([0, 1], [0, 1], "k--", lw=0.8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel(f"target {dim}")
            ax.set_ylabel(f"predicted {dim}")
        fig.suptitle(f"Predicted vs target VAD of the best trial ({best['trial']})")
        paths.append(_save(fig, out / "best_vad_scatter.png"))
    return paths


def vad_pairs(predictions: str | Path | None) -> list[tuple[list[float], list[float]]]:
    """(target, predicted) VAD of every parsed row of a predictions.jsonl."""
    if predictions is None or not Path(predictions).is_file():
        return []
    pairs = []
    for line in Path(predictions).read_text().splitlines():
        row = json.loads(line)
        gold, pred = row.get("gold_vad"), row.get("vad")
        if gold and pred:
            pairs.append(([gold[k] for k in "vad"], [pred[k] for k in "vad"]))
    return pairs


def write_report(rows: list[dict], out: Path, best_metrics: dict | None = None,
                 best_predictions: str | Path | None = None) -> dict[str, Any]:
    md, csv_path = write_tables(rows, out)
    plots = write_plots(rows, out, best_metrics, vad_pairs(best_predictions))
    return {"rows": rows, "files": [md, csv_path, *plots]}


def build_report(c, experiment_id: str, parent_run_id: str, out: Path, mode: str = "max") -> dict[str, Any]:
    """The report of a screen from MLflow alone (`python -m emoloom report`)."""
    rows = trial_rows(c, experiment_id, parent_run_id, mode)
    best = _best(rows)
    metrics, predictions = None, None
    if best is not None:
        metrics = c.get_run(best["run_id"]).data.metrics
        try:
            predictions = c.download_artifacts(best["run_id"], "dev/predictions.jsonl", str(out / "_best"))
        except Exception:  # noqa: BLE001 - a trial without predictions just has no scatter
            predictions = None
    return write_report(rows, out, metrics, predictions)


def journal_report(trials_dir: Path, out: Path, mode: str = "max") -> dict[str, Any]:
    """The report of a screen from its trials' journals and folders: what the screen itself
    writes when it ends, whether or not MLflow is reachable at that moment."""
    from emoloom.journal import journals

    views = {}
    for path in journals(trials_dir):
        state = json.loads(path.read_text())
        views[path.parent.name] = {**state["view"], "run_id": state["run_id"], "run_name": path.parent.name}
    rows = rank_rows(list(views.values()), mode)
    best = _best(rows)
    if best is None:
        return write_report(rows, out)
    folder = trials_dir / f"trial_{best['trial']}"
    return write_report(rows, out, views[folder.name]["metrics"], folder / "dev" / "predictions.jsonl")


def _best(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r["status"] == "FINISHED" and r["objective"] is not None), None)


def latest_screen(c, experiment_name: str):
    exp = c.get_experiment_by_name(experiment_name)
    if exp is None:
        raise SystemExit(f"no MLflow experiment named {experiment_name!r}")
    parents = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.ROLE_TAG}` = 'screen'",
                            max_results=1, order_by=["attributes.start_time DESC"])
    if not parents:
        raise SystemExit(f"experiment {experiment_name!r} holds no screen run")
    return exp.experiment_id, parents[0]


def register(sub) -> None:
    p = sub.add_parser("report", help="rebuild a screen's leaderboard and plots from MLflow")
    p.add_argument("--experiment", required=True)
    p.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else runs/mlflow.db")
    p.add_argument("--out", default=None, help="output folder (default runs/report-<experiment>)")
    p.add_argument("--storage", default="runs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    uri = tracking.resolve_tracking_uri(args.tracking_uri, args.storage)
    c = tracking.client(uri)
    exp_id, parent = latest_screen(c, args.experiment)
    mode = parent.data.params.get("space.mode", "max")
    out = Path(args.out or Path(args.storage) / f"report-{args.experiment}")
    result = build_report(c, exp_id, parent.info.run_id, out, mode)
    print((out / "leaderboard.md").read_text())
    for path in result["files"]:
        print(f"wrote {path}")
    return 0
