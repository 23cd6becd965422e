"""The fidelity study: does the screen's cheap ranking, and each rung signal at each rung, predict
the objective after X times the training budget? It sets the defaults of the rung signal,
`eval.epoch_limit` and ASHA's `grace_period` (README: "How far the screen's ranking holds").

    .venv/bin/python bench/fidelity.py                         # synthetic: 12 candidates x 2 seeds, 4x
    .venv/bin/python bench/fidelity.py --goemotions 6          # plus real GoEmotions (6 candidates, 1 seed)
    .venv/bin/python bench/fidelity.py --seeds 0 --candidates 6 --json out.json

Per seed it runs a real screen (`python -m emoloom.screen`: Optuna random sampler over both
built-in models x learning rate x VAD-preserving weight, ASHA off so every candidate reports every
rung and every rung signal) whose `fidelity:` section retrains every candidate at X times the
budget (`top=N random=0`). From each audit's fidelity.json it scores, per rung signal and epoch
and for the screen's own final ranking (the objective decoded on all `eval.dev_limit` rows):

* Kendall tau and Spearman rho with the full-budget objective;
* top-1: the candidate the signal ranks first is the full-budget best; regret: the best
  full-budget objective minus that candidate's (ties in the signal: the expectation over a random
  tie-break);
* halving: the chance that the full-budget best survives an ASHA rung (the better half kept)
  judged by that signal, against k/n for random stops.

Intervals are over seeds (mean [min, max]). Writes <storage>/study.json and study.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}

SPACE = """\
description: fidelity study (bench/fidelity.py)
metric: objective
mode: max
num_trials: {n}
max_concurrent: 2
seed: {seed}
sampler: random
# ASHA off: every candidate reports every rung. `signal` only names what ASHA would compare; kept
# as the study ran (part of the screen's hash), so a rerun resumes the same screens and audits.
asha: {{enabled: false, max_t: {epochs}, grace_period: 1, reduction_factor: 2, signal: decoded}}
fixed: {{epochs: {epochs}, steps_per_epoch: {steps}, data.synthetic_size: 300, data.dev_size: 32}}
params:
  model.name: {{type: categorical, choices: [tiny-qwen2, tiny-llama]}}
  optim.lr: {{type: float, low: 0.0005, high: 0.03, log: true}}
  loss.vad_preserve: {{type: float, low: 0.0, high: 0.5}}
"""

# the source quoted: unquoted, `${...}` would open a YAML flow mapping inside the list
GOEMOTIONS = ["train.data.sources=[{corpus: goemotions, source: '${EMOLOOM_DATA:-../shared/data}/goemotions', "
              "split: train, dev_split: dev, pool: A, limit: 3000}]",
              "eval.cross_corpus=[]"]


def run(cmd: list[str], log: Path) -> tuple[float, int]:
    started = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=ENV, cwd=REPO).returncode
    return time.time() - started, rc


def one_study(storage: Path, name: str, seed: int, n: int, epochs: int, steps: int, x: float, dev_limit: int,
              epoch_limit: int, extra: list[str]) -> dict:
    """One screen plus its full audit; the audit's fidelity.json with the run's wall times."""
    space = storage / f"{name}-space.yaml"
    space.parent.mkdir(parents=True, exist_ok=True)
    space.write_text(SPACE.format(n=n, seed=seed, epochs=epochs, steps=steps))
    cmd = [sys.executable, "-m", "emoloom.screen", f"space={space}", f"storage={storage}", f"name={name}",
           f"seed={seed}", f"eval.dev_limit={dev_limit}", f"eval.epoch_limit={epoch_limit}", "eval.max_new_tokens=64",
           "ray.num_cpus=2", "mlflow.registered_model=null", f"fidelity={{top: {n}, random: 0, budget_x: {x:g}}}",
           *extra]
    load = os.getloadavg()
    wall, rc = run(cmd, storage / f"{name}.log")
    if rc != 0:
        raise SystemExit(f"{name}: the screen failed (rc {rc}); see {storage / f'{name}.log'}")
    found = sorted(storage.glob(f"{name}-*/fidelity/x{x:g}-top{n}-random0/fidelity.json"))
    result = json.loads(found[-1].read_text())
    return {**result, "name": name, "seed": seed, "total_wall_s": round(wall, 1), "load_before": load,
            "load_after": os.getloadavg()}


# -- scoring one signal on one study --------------------------------------------------------------

def _tie_expectation(scores: list[float], full: list[float]) -> tuple[float, float]:
    """(expected top-1 agreement, expected regret) of picking the best `scores` with ties broken
    at random."""
    top = max(scores)
    tied = [i for i, s in enumerate(scores) if s == top]
    best = max(full)
    return (sum(full[i] >= best for i in tied) / len(tied), sum(best - full[i] for i in tied) / len(tied))


def _survival(scores: list[float], full: list[float]) -> tuple[float, float]:
    """(chance the full-budget best survives keeping the better half by `scores` (ties at the
    cut broken at random), the same for random stops)."""
    n = len(scores)
    k = max(1, n // 2)
    b = max(range(n), key=lambda i: full[i])
    above = sum(s > scores[b] for s in scores)
    equal = sum(s == scores[b] for s in scores)
    p = 1.0 if above + equal <= k else max(0.0, (k - above) / equal)
    return p, k / n


def score(study: dict) -> dict[tuple[str, str], dict]:
    """{(signal, rung): {tau, rho, top1, regret, survive, survive_random, n}} of one study."""
    from emoloom.screen.fidelity import correlation
    from emoloom.screen.signals import SIGNALS, oriented

    trials = study["trials"]
    full = [t["full_objective"] for t in trials]
    cells: dict[tuple[str, str], dict] = {}

    def add(key, scores):
        scores = [s if math.isfinite(s) else -1e30 for s in scores]
        top1, regret = _tie_expectation(scores, full)
        survive, rnd = _survival(scores, full)
        tau, rho = correlation("kendall", scores, full), correlation("spearman", scores, full)
        cells[key] = {"tau": tau if math.isfinite(tau) else 0.0, "rho": rho if math.isfinite(rho) else 0.0,
                      "top1": top1, "regret": regret, "survive": survive, "survive_random": rnd, "n": len(scores)}

    epochs = sorted({int(e) for t in trials for e in t["rungs"]})
    for name in SIGNALS:
        for e in epochs:
            values = [t["rungs"].get(str(e), {}).get(name) for t in trials]
            if None in values:
                continue
            add((name, f"epoch {e}"), [oriented(v, name, "max") for v in values])
    add(("screen final", f"epoch {epochs[-1]}"), [t["screen_objective"] for t in trials])
    return cells


def aggregate(studies: list[dict]) -> list[dict]:
    per = [score(s) for s in studies]
    keys = [k for k in per[0] if all(k in p for p in per)]
    rows = []
    for key in keys:
        row = {"signal": key[0], "rung": key[1]}
        for m in ("tau", "rho", "top1", "regret", "survive", "survive_random"):
            vals = [p[key][m] for p in per]
            row[m] = {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}
        rows.append(row)
    return rows


def table(rows: list[dict], seeds: int) -> str:
    def cell(v):
        return f"{v['mean']:.2f} [{v['min']:.2f}, {v['max']:.2f}]" if seeds > 1 else f"{v['mean']:.2f}"

    out = ["| signal | rung | Kendall tau | Spearman rho | top-1 | regret | best survives halving (random) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['signal']} | {r['rung']} | {cell(r['tau'])} | {cell(r['rho'])} | {cell(r['top1'])} | "
                   f"{cell(r['regret'])} | {cell(r['survive'])} ({r['survive_random']['mean']:.2f}) |")
    return "\n".join(out)


def signal_strength(studies: list[dict]) -> str:
    """How much there is to rank: the spread of the full-budget objective and the share at 0."""
    lines = []
    for s in studies:
        full = [t["full_objective"] for t in s["trials"]]
        lines.append(f"{s['name']}: full-budget objective {min(full):.4f}..{max(full):.4f}, "
                     f"{sum(f == 0 for f in full)}/{len(full)} at 0; screen final "
                     f"{min(t['screen_objective'] for t in s['trials']):.4f}.."
                     f"{max(t['screen_objective'] for t in s['trials']):.4f}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--candidates", type=int, default=12)
    p.add_argument("--epochs", type=int, default=2, help="screen budget in epochs (each a rung)")
    p.add_argument("--steps", type=int, default=30, help="steps per epoch")
    p.add_argument("--budget-x", type=float, default=4.0)
    p.add_argument("--dev-limit", type=int, default=60)
    p.add_argument("--epoch-limit", type=int, default=16)
    p.add_argument("--goemotions", type=int, default=0, help="candidates of a real GoEmotions study (0: none)")
    p.add_argument("--storage", default=str(REPO / "runs" / "bench-fidelity"))
    p.add_argument("--json", default=None)
    args = p.parse_args()
    storage = Path(args.storage).resolve()
    t0, load0 = time.time(), os.getloadavg()
    out: dict = {"args": vars(args), "load_before": load0, "parts": {}}
    parts = [("synthetic", [dict(name=f"synthetic-s{s}", seed=s, n=args.candidates, extra=[]) for s in args.seeds])]
    if args.goemotions:
        parts.append(("goemotions", [dict(name="goemotions-s0", seed=0, n=args.goemotions, extra=GOEMOTIONS)]))
    for part, runs in parts:
        studies = []
        for r in runs:
            print(f"running {r['name']} ({r['n']} candidates, {args.epochs} x {args.steps} steps, audit at "
                  f"{args.budget_x:g}x) ...", flush=True)
            studies.append(one_study(storage, r["name"], r["seed"], r["n"], args.epochs, args.steps, args.budget_x,
                                     args.dev_limit, args.epoch_limit, r["extra"]))
            s = studies[-1]
            print(f"  {s['total_wall_s']:.0f} s (audit {s['wall_s']:.0f} s = {s['extra_wall_share']:.0%} of the "
                  f"screen); load {s['load_before'][0]:.1f} -> {s['load_after'][0]:.1f}", flush=True)
        rows = aggregate(studies)
        text = table(rows, len(studies))
        strength = signal_strength(studies)
        out["parts"][part] = {"rows": rows, "studies": studies, "table": text, "signal": strength}
        print(f"\n## {part}: {len(studies)} seed(s) x {runs[0]['n']} candidates, screen {args.epochs} epochs x "
              f"{args.steps} steps vs {args.budget_x:g}x; decoded on {args.epoch_limit} rows per epoch, screen "
              f"final on {args.dev_limit}\n{strength}\n\n{text}\n", flush=True)
    out.update(wall_s=round(time.time() - t0, 1), load_after=os.getloadavg())
    print(f"study wall time {out['wall_s']:.0f} s; load average {load0[0]:.2f} before, {out['load_after'][0]:.2f} after")
    storage.mkdir(parents=True, exist_ok=True)
    (storage / "study.json").write_text(json.dumps(out, indent=1, default=str))
    (storage / "study.md").write_text("\n\n".join(f"## {k}\n{v['signal']}\n\n{v['table']}" for k, v in out["parts"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
