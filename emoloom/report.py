"""Leaderboard and plots of a screen: rows from run views, tables and PNGs.

A view is a run as the report reads it: from MLflow (`run_view`) or from the trials' journals
(`journal_views`), so the screen reports from its journals even while MLflow is away. The
statistics that fill `ci95`, `tied` and `below_floor` (and the verdict under the table) come from
`emoloom.screen.verdict`, which also holds `python -m emoloom report`.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from emoloom import tracking

# leaderboard column -> MLflow metric key of a trial (or floor) run
COLUMNS = {
    "objective": "objective",
    "macro_f1": "dev.macro_f1",
    "macro_recall": "dev.macro_recall",
    "parse_ok": "dev.parse_ok_rate",
    "vad_1mrmse": "dev.vad_1mrmse",
    "cross_ekman_f1": "cross.ekman_macro_f1",
    # the space's metric decoded by the base model before any training step (the epoch sample)
    "zero_shot": "zero_shot.decoded",
}
SECONDS = ("train_s", "eval_s")
RANKED = ("FINISHED", "STOPPED")  # finished trials first, then stopped ones by their last rung value


def run_view(run) -> dict[str, Any]:
    """An MLflow run as the report reads it (the same shape as a journal's view)."""
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
            "metrics": dict(run.data.metrics), "tags": dict(run.data.tags), "params": dict(run.data.params)}


def journal_views(trials_dir: Path) -> list[dict[str, Any]]:
    """The views of a screen's trial and floor runs from their journals (`folder` added)."""
    from emoloom.journal import journals

    views = []
    for path in journals(trials_dir):
        state = json.loads(path.read_text())
        views.append({**state["view"], "run_id": state["run_id"], "run_name": state["run_name"],
                      "folder": str(path.parent)})
    return views


def short_names(params: list[str]) -> dict[str, str]:
    """Column names for searched parameters: the last part of the dotted key unless two share it
    (model.name is the `model` column already)."""
    last = [k.rsplit(".", 1)[-1] for k in params]
    return {k: (k if last.count(n) > 1 else n) for k, n in zip(params, last) if k != "model.name"}


def _seconds(m: dict, finished: bool) -> dict[str, float | None]:
    """Training and evaluation seconds of a trial: the final evaluation's when it finished, the
    last rung's when it was stopped (epoch evaluations counted as evaluation, not training)."""
    epoch_eval = m.get("epoch_eval_seconds", 0.0)
    if finished and "train_seconds" in m:
        train, final = m["train_seconds"] - epoch_eval, m.get("eval_seconds", 0.0)
    elif "elapsed_seconds" in m:
        train, final = m["elapsed_seconds"] - epoch_eval, 0.0
    else:
        return {"train_s": None, "eval_s": None, "epoch_eval_s": None, "final_eval_s": None}
    return {"train_s": train, "eval_s": epoch_eval + final, "epoch_eval_s": epoch_eval, "final_eval_s": final}


def rank_rows(views: list[dict[str, Any]], mode: str = "max", searched: list[str] = ()) -> list[dict[str, Any]]:
    """Leaderboard rows: finished trials by objective, then trials ASHA stopped by their last
    rung value (`rung` says which), then failed ones; floors (role `floor`) after them, never
    ranked. Trials interrupted with a killed driver before Tune recorded them (status
    INTERRUPTED) are not candidates: their configuration never ran to an end, so no row."""
    names = short_names(list(searched))
    rows = []
    for view in views:
        m, tags = view["metrics"], view["tags"]
        status = tags.get("emoloom.status", view["status"])
        role = tags.get(tracking.ROLE_TAG, "trial")
        if status == "INTERRUPTED":
            continue
        rows.append({
            "trial": tags.get(tracking.TRIAL_TAG, view.get("run_name")),
            "role": role,
            "run_id": view.get("run_id"),
            "status": "FLOOR" if role == "floor" else status,
            "model": view["params"].get("model.name", ""),
            **{short: _number(view["params"].get(key)) for key, short in names.items()},
            "rung": m.get("epoch"),
            **{col: m.get(key) for col, key in COLUMNS.items()},
            **_seconds(m, status == "FINISHED"),
            "note": tags.get("emoloom.failure") or tags.get("emoloom.note", ""),
            "folder": view.get("folder"),
        })
    sign = -1 if mode == "max" else 1

    def key(row):
        value = row["objective"]
        scored = row["role"] == "trial" and row["status"] in RANKED and value is not None and math.isfinite(value)
        group = RANKED.index(row["status"]) if scored else (2 if row["role"] == "trial" else 3)
        return (group, sign * value if scored else 0.0, row["trial"])

    rows.sort(key=key)
    for rank, row in enumerate((r for r in rows if r["role"] == "trial"), start=1):
        row["rank"] = rank
    return rows


def _number(text: str | None) -> float | str | None:
    """A param as MLflow stores it (text) back as a number where it is one, so the table can
    round it like a metric."""
    try:
        return float(text) if text is not None and text.strip().lower() not in ("nan", "inf", "-inf") else text
    except ValueError:
        return text


def best_row(rows: list[dict]) -> dict | None:
    """The screen's pick: the first finished trial (rows as ranked by `rank_rows`)."""
    return next((r for r in rows if r["role"] == "trial" and r["status"] == "FINISHED"
                 and r["objective"] is not None), None)


def _fmt(value: Any, column: str = "") -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.1f}" if column in SECONDS else f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.4g}, {value[1]:.4g}]"
    # one table row per trial: no line breaks or column separators from error messages
    return "" if value is None else " ".join(str(value).split()).replace("|", "\\|")


def table_fields(searched: list[str] = ()) -> list[str]:
    return ["rank", "trial", "status", "model", *short_names(list(searched)).values(), "rung", "objective", "ci95",
            "tied", "below_floor", *list(COLUMNS)[1:], *SECONDS, "note"]


def write_tables(rows: list[dict], out: Path, searched: list[str] = (), verdict: list[str] = ()) -> tuple[Path, Path]:
    """leaderboard.csv (every field, full precision) and leaderboard.md (4 significant digits,
    seconds to 0.1, the verdict's sentences under the table)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # `report --out FILE` (or a path below a file): one line, not a traceback; the file is
        # left as it is
        print(f"error: {out}: a file is in the way; a report is a folder of files (choose another --out)",
              file=sys.stderr)
        raise SystemExit(2) from None
    fields = table_fields(searched)
    csv_path = out / "leaderboard.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*fields, "run_id"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    md_path = out / "leaderboard.md"
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(_fmt(r.get(f), f) for f in fields) + " |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n" + "".join(f"\n{line}\n" for line in verdict))
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
    `best_pairs` (its (target, predicted) VAD) come from MLflow or from the trial's folder.
    Error bars are the rows' `ci95` (paired bootstrap) where the statistics gave one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    trials = [r for r in rows if r["role"] == "trial"]
    floors = [r for r in rows if r["role"] == "floor" and r["objective"] is not None]
    done = [r for r in trials if r["objective"] is not None and r["status"] == "FINISHED"]

    def yerr(items):
        return [[max(0.0, r["objective"] - r["ci95"][0]) if r.get("ci95") else 0.0 for r in items],
                [max(0.0, r["ci95"][1] - r["objective"]) if r.get("ci95") else 0.0 for r in items]]

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ordered = sorted(trials, key=lambda r: r["trial"])
    ax.bar(range(len(ordered)), [r["objective"] or 0.0 for r in ordered],
           yerr=yerr([{**r, "objective": r["objective"] or 0.0} for r in ordered]), capsize=3,
           color=["tab:blue" if r in done else "tab:gray" for r in ordered])
    for floor, style in zip(floors, ("--", ":", "-.")):
        ax.axhline(floor["objective"], color="tab:red", ls=style, lw=1, label=f"floor: {floor['model']}")
    if floors:
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(ordered)), [r["trial"][-8:] for r in ordered], rotation=60, fontsize=7)
    ax.set_ylabel("objective (95% interval)")
    ax.set_title("Objective per trial (gray: failed or stopped; bars: paired bootstrap)")
    paths.append(_save(fig, out / "objective_per_trial.png"))

    timed = [r for r in done if r["train_s"] is not None]
    fig, ax = plt.subplots(figsize=(5, 4))
    if timed:
        pts = [(r["train_s"], r["objective"]) for r in timed]
        front = set(pareto_front(pts))
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=yerr(timed), fmt="none", ecolor="0.6",
                    capsize=3)
        ax.scatter(*zip(*pts), c=["tab:red" if i in front else "tab:blue" for i in range(len(pts))], zorder=3)
        fx = sorted(pts[i] for i in front)
        ax.plot([p[0] for p in fx], [p[1] for p in fx], "r--", lw=1, label="Pareto front")
        for floor in floors:
            ax.axhline(floor["objective"], color="0.4", ls=":", lw=1)
        ax.legend()
    ax.set_xlabel("training seconds")
    ax.set_ylabel("dev Macro-F1 (parse failures wrong)")
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


def write_report(rows: list[dict], out: Path, *, searched: list[str] = (), verdict: list[str] = (),
                 best_metrics: dict | None = None, best_predictions: str | Path | None = None) -> dict[str, Any]:
    md, csv_path = write_tables(rows, out, searched, verdict)
    plots = write_plots(rows, out, best_metrics, vad_pairs(best_predictions))
    return {"rows": rows, "files": [md, csv_path, *plots]}


def latest_screen(c, experiment_name: str):
    exp = c.get_experiment_by_name(experiment_name)
    if exp is None:
        raise SystemExit(f"no MLflow experiment named {experiment_name!r}")
    parents = c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.ROLE_TAG}` = 'screen'",
                            max_results=1, order_by=["attributes.start_time DESC"])
    if not parents:
        raise SystemExit(f"experiment {experiment_name!r} holds no screen run")
    return exp.experiment_id, parents[0]
