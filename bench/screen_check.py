"""Measure the screen: the embedded default's wall time, ASHA savings, Ray/MLflow overhead per
trial, peak memory; and whether it tells candidates apart (a broken candidate with learning
rate 0 must rank last; the best trial must beat the untrained base model on Macro-F1 and ParseOK).

    python bench/screen_check.py                 # both parts (about 15 minutes on 2 cores)
    python bench/screen_check.py --only default  # or: --only discrimination
    python bench/screen_check.py --json out.json

Prints tables; writes nothing but its own storage folder (default runs/bench) and the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true"}


def run_screen(args: list[str], log: Path) -> tuple[float, float, int]:
    """Run the screen as a user would; returns (wall s, peak RSS GiB of its process tree, rc)."""
    started = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "emoloom.screen", *args], stdout=f, stderr=subprocess.STDOUT,
                                env=ENV, cwd=REPO)
    peak = 0.0
    root = psutil.Process(proc.pid)
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()) / 2**30)
            except psutil.Error:
                pass
            time.sleep(1.0)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    rc = proc.wait()
    stop.set()
    t.join()
    return time.time() - started, peak, rc


def summary_of(storage: Path) -> dict:
    return json.loads(next(storage.glob("*/summary.json")).read_text())


def trial_runs(summary: dict):
    from emoloom import tracking

    c = tracking.client(summary["tracking_uri"])
    runs = tracking.child_runs(c, summary["experiment_id"], summary["parent_run_id"])
    return c, [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "trial"]  # not the floors


def default_part(storage: Path, run: bool = True) -> dict:
    from emoloom.screen.space import load_space

    wall, peak, rc = (run_screen([f"storage={storage}"], storage.parent / f"{storage.name}.log") if run
                      else (None, None, None))
    summary = summary_of(storage)
    wall = wall or summary["wall_s"]
    c, runs = trial_runs(summary)
    space = load_space("default")
    epochs_run, in_trial, durations = 0, [], []  # durations: finished trials, start to end
    for r in runs:
        epochs_run += len(c.get_metric_history(r.info.run_id, "loss"))
        if r.info.end_time and r.info.status == "FINISHED":
            total = (r.info.end_time - r.info.start_time) / 1000
            durations.append(total)
            m = r.data.metrics
            # MLflow logging, data preparation and artifact upload inside the trial
            in_trial.append(total - m.get("train_seconds", 0) - m.get("eval_seconds", 0))
    budget = space.num_trials * space.asha.max_t
    return {"rc": rc, "wall_s": round(wall, 1), "peak_rss_gib": peak and round(peak, 2), "trials": len(runs),
            "finished": sum(r.info.status == "FINISHED" for r in runs),
            "stopped_by_asha": summary["stopped_early"], "failed": summary["failed"],
            "trial_epochs_run": epochs_run, "trial_epochs_budget": budget,
            "asha_saved_share": round(1 - epochs_run / budget, 3),
            "in_trial_overhead_s": round(sum(in_trial) / len(in_trial), 1) if in_trial else None,
            "trial_s_mean": round(sum(durations) / len(durations), 1) if durations else None,
            "best": summary["best"] and {k: summary["best"][k] for k in ("trial", "model", "objective", "parse_ok")}}


DISCRIMINATION_SPACE = """
description: a good recipe against a broken one (learning rate 0)
metric: objective
mode: max
num_trials: 2
max_concurrent: 2
seed: 0
asha: {enabled: false}
fixed: {epochs: 3, steps_per_epoch: 60}
params:
  model.name: {type: categorical, choices: [tiny-qwen2]}
  optim.lr: {type: float, low: 0.0, high: 0.01}
baselines:
  - {model.name: tiny-qwen2, optim.lr: 0.005}
  - {model.name: tiny-qwen2, optim.lr: 0.0}
"""


def discrimination_part(storage: Path) -> dict:
    from emoloom.eval.run import EvalConfig, evaluate
    from emoloom.screen.config import ScreenConfig
    from emoloom.screen.defaults import DEFAULT_SCREEN
    from emoloom.config import load_config
    from emoloom.screen.run import screen_sets
    from emoloom.screen.space import load_space
    from emoloom.screen.trial import build_train_config, summarize

    storage.mkdir(parents=True, exist_ok=True)
    space = storage / "space.yaml"
    space.write_text(DISCRIMINATION_SPACE)
    wall, peak, rc = run_screen([f"storage={storage}", f"space={space}", "name=discrimination",
                                 "mlflow.registered_model=null"], storage.parent / f"{storage.name}.log")
    summary = summary_of(storage)
    _, runs = trial_runs(summary)
    rows = []
    for run in runs:
        m = run.data.metrics
        rows.append({"candidate": f"lr={float(run.data.params['optim.lr']):g}", "status": run.info.status,
                     "objective": m.get("objective"), "macro_f1": m.get("dev.macro_f1"),
                     "parse_ok": m.get("dev.parse_ok_rate")})
    # the untrained base model on the screen's evaluation sample, same decoder
    cfg = load_config(ScreenConfig, None, [f"space={space}"], base=DEFAULT_SCREEN)
    screen = cfg.model_dump(mode="json")
    train_cfg = build_train_config(screen["train"], {}, {"model.name": "tiny-qwen2"}, storage / "untrained", 0)
    dev = screen_sets(cfg, load_space(str(space))).dev
    base = summarize(evaluate(EvalConfig(model=train_cfg.model, decoder=screen["eval"]["decoder"],
                                         max_new_tokens=screen["eval"]["max_new_tokens"], bootstrap=0), dev,
                              log=lambda _m: None), "dev")
    rows.append({"candidate": "untrained base", "status": "-", "objective": base["dev.macro_f1_strict"],
                 "macro_f1": base["dev.macro_f1"], "parse_ok": base["dev.parse_ok_rate"]})
    ranked = sorted(rows[:-1], key=lambda r: -(r["objective"] or 0))
    best, untrained = ranked[0], rows[-1]
    checks = {
        "broken ranks last": ranked[-1]["candidate"] == "lr=0",
        "best beats untrained on Macro-F1": (best["macro_f1"] or 0) > (untrained["macro_f1"] or 0),
        "best beats untrained on ParseOK": (best["parse_ok"] or 0) > (untrained["parse_ok"] or 0),
    }
    return {"rc": rc, "wall_s": round(wall, 1), "rows": rows, "checks": checks}


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["default", "discrimination"])
    p.add_argument("--storage", default=str(REPO / "runs" / "bench"))
    p.add_argument("--json", default=None)
    args = p.parse_args()
    root = Path(args.storage)
    result: dict = {}
    if args.only in (None, "default"):
        result["default"] = d = default_part(root / "default")
        print("\nEmbedded default screen (python -m emoloom.screen)")
        print(table([{k: v for k, v in d.items() if k != "best"}]))
        print(f"best: {d['best']}")
    if args.only in (None, "discrimination"):
        result["discrimination"] = r = discrimination_part(root / "discrimination")
        print("\nCan the screen tell candidates apart? (synthetic GoEmotions dev, KV-off fast decoder)")
        print(table(r["rows"]))
        for name, ok in r["checks"].items():
            print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    ok = all(result.get("discrimination", {}).get("checks", {}).values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
