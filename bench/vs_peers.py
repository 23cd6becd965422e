"""Our screen against what users would do instead: same candidates, same budget, same seeds.

    .venv/bin/python bench/vs_peers.py                        # the plan, then everything (60 min measured on 2 cores)
    .venv/bin/python bench/vs_peers.py --seeds 1 --corpora synthetic     # one seed, synthetic only
    .venv/bin/python bench/vs_peers.py --plan                 # the plan and expected time only

Strategies, each written with the library a user would reach for, around one training function
(`train_and_score`: emoloom's trainer and KV-off evaluation on the screen's own evaluation sample):

* `optuna_tpe`: `optuna.create_study(TPESampler).optimize(...)`, every trial at the full budget;
* `optuna_tpe_hyperband`: the same with optuna's `HyperbandPruner` over epochs (intermediate value:
  the decoded objective on the screen's per-epoch rows, what a user would compare; our screen's
  ASHA compares its own default rung signal);
* `random_halving`: optuna's `RandomSampler` with its `SuccessiveHalvingPruner`;
* `grid`: optuna's `GridSampler` over base model x learning rate (other values at the baseline);
* `emoloom`: `python -m emoloom.screen` with its defaults (Ray Tune + Optuna TPE + ASHA, MLflow,
  statistics), the same space, trial count, budget and seed.

Every optuna strategy starts, like the screen, with the space's baselines (`enqueue_trial`). Ground
truth: every candidate any strategy picked is trained at `--budget-x` times the screen's epochs and
scored on the same evaluation sample. Per strategy and seed: the picked candidate's full-budget
objective and its regret (best full-budget objective among all picks of that seed minus it), CPU
seconds (this process's, plus the screen's process tree), wall time, and overhead: wall time not
spent inside training or evaluation (for the screen: its wall time minus its trials' busy time
divided by the trials it runs at once). Results are cached per (corpus, seed, strategy) in
`--out`/results.json, so an interrupted bench resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("optuna_tpe", "optuna_tpe_hyperband", "random_halving", "grid", "emoloom")
GRID_LR = (0.001, 0.003, 0.01)
DEFAULT_SET = ("space.fixed.steps_per_epoch=30",)


def corpus_overrides(corpus: str, data_root: Path) -> list[str]:
    """Screen overrides per corpus: synthetic is the embedded default; goemotions a real subset."""
    if corpus == "synthetic":
        return []
    if corpus == "goemotions":
        return [f"train.data.sources=[{{corpus: goemotions, source: {data_root / 'goemotions'}, split: train, "
                "dev_split: dev, pool: A, limit: 4000}]", "eval.cross_corpus=[]"]
    raise SystemExit(f"unknown corpus {corpus!r} (synthetic, goemotions)")


def resolved_screen(overrides: list[str]) -> dict:
    """The screen's own resolved config and space (`--dry-run`): one source of truth for both sides."""
    proc = subprocess.run([sys.executable, "-m", "emoloom.screen", *overrides, "--dry-run"], cwd=REPO,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"emoloom.screen --dry-run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def cpu_seconds() -> float:
    """CPU seconds of this process and of every child process it has waited for (the screen's
    driver, which waits for its Ray processes, which wait for their workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# -- the user's training function --------------------------------------------------------------

class Trainer:
    """`train_and_score(params, epochs, report)`: train one candidate with emoloom's trainer and
    score it KV-off on the screen's evaluation sample. `report(epoch, value)` gets the decoded
    objective on the per-epoch rows after every epoch (and may raise optuna.TrialPruned)."""

    def __init__(self, dry: dict, out: Path):
        from emoloom.screen.config import ScreenConfig
        from emoloom.screen.run import screen_sets
        from emoloom.screen.space import SearchSpace

        self.cfg = ScreenConfig.model_validate(dry["config"])
        space = {k: v for k, v in dry["space"].items() if k != "file"}
        self.space = SearchSpace.model_validate(space)
        self.sets = screen_sets(self.cfg, self.space)
        self.out, self.count = out, 0
        self.busy_s = 0.0  # wall seconds spent inside training and evaluation

    def train_config(self, params: dict, epochs: int, out: Path):
        from emoloom.config import load_config
        from emoloom.train.config import TrainConfig

        values = {**self.space.fixed, "epochs": epochs, **params}
        overrides = [f"{k}={json.dumps(v)}" for k, v in values.items()]
        base = {**json.loads(json.dumps(self.cfg.train)), "out": str(out), "seed": self.cfg.seed}
        return load_config(TrainConfig, None, overrides, base=base)

    def score(self, train_cfg, rows, adapter=None, candidate=None) -> float:
        from emoloom.eval.run import EvalConfig, evaluate

        e = self.cfg.eval
        result = evaluate(EvalConfig(model=train_cfg.model, adapter=adapter, decoder=e.decoder, actors=0,
                                     batch_size=e.batch_size, max_new_tokens=e.max_new_tokens, bootstrap=0,
                                     seed=self.cfg.seed), rows, candidate=candidate, log=lambda _m: None)
        value = result["metrics"]["all"]["all_rows"]["labels"]["macro_f1"]  # the screen's default objective
        return float(value or 0.0)

    def train_and_score(self, params: dict, epochs: int, report: Callable[[int, float], None] | None = None) -> float:
        from emoloom.models import Loaded
        from emoloom.train import fit

        self.count += 1
        train_cfg = self.train_config(params, epochs, self.out / f"t{self.count:03d}")

        def hook(epoch, model, tokenizer, _metrics):
            if report is None:
                return {}
            was = model.training
            model.eval()
            try:
                value = self.score(train_cfg, self.sets.epoch,
                                   candidate=Loaded(model=model, tokenizer=tokenizer, spec=train_cfg.model, path="(training)"))
            finally:
                model.train(was)
            report(epoch, value)
            return {}

        t0 = time.time()
        try:
            result = fit(train_cfg, epoch_hook=hook)
            return self.score(train_cfg, self.sets.dev, adapter=str(result.adapter))
        finally:
            self.busy_s += time.time() - t0


# -- strategies --------------------------------------------------------------------------------

def suggest(trial, params: dict) -> dict:
    """The space's parameters as a user writes them with optuna's trial API."""
    out = {}
    for name, p in params.items():
        if p["type"] == "categorical":
            out[name] = trial.suggest_categorical(name, p["choices"])
        elif p["type"] == "float":
            out[name] = trial.suggest_float(name, p["low"], p["high"], log=p.get("log", False))
        else:
            out[name] = trial.suggest_int(name, p["low"], p["high"], log=p.get("log", False))
    return out


def run_optuna(kind: str, trainer: Trainer, space: dict, seed: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs, n = int(space["fixed"]["epochs"]), int(space["num_trials"])
    sampler, pruner = {
        "optuna_tpe": (optuna.samplers.TPESampler(seed=seed), optuna.pruners.NopPruner()),
        "optuna_tpe_hyperband": (optuna.samplers.TPESampler(seed=seed),
                                 optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=2)),
        "random_halving": (optuna.samplers.RandomSampler(seed=seed),
                           optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)),
        "grid": (optuna.samplers.GridSampler({"model.name": space["params"]["model.name"]["choices"],
                                              "optim.lr": list(GRID_LR)}, seed=seed), optuna.pruners.NopPruner()),
    }[kind]
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    baseline = space["baselines"][0] if space["baselines"] else {}
    if kind != "grid":
        for b in space["baselines"]:
            study.enqueue_trial(b)

    def objective(trial):
        if kind == "grid":
            params = {**baseline, "model.name": trial.suggest_categorical("model.name", space["params"]["model.name"]["choices"]),
                      "optim.lr": trial.suggest_categorical("optim.lr", list(GRID_LR))}
        else:
            params = suggest(trial, space["params"])

        def report(epoch, value):
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return trainer.train_and_score(params, epochs, report if kind in ("optuna_tpe_hyperband", "random_halving") else None)

    study.optimize(objective, n_trials=len(GRID_LR) * 2 if kind == "grid" else n)
    best = study.best_trial
    params = {**baseline, **best.params}
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return {"params": params, "objective": best.value, "trials": len(study.trials), "pruned": pruned}


def tree_cpu_seconds(proc: subprocess.Popen, every_s: float = 0.5, by_role: dict | None = None) -> float:
    """Wait for `proc`; CPU seconds of it and every descendant (Ray's GCS, raylet, workers), each
    process's last reading before it ended (so at most `every_s` of each one is missed). Ray's
    workers are reaped by the raylet, not by us, so getrusage(RUSAGE_CHILDREN) would miss them.
    `by_role`, when given, gets the same seconds split into the screen's driver, Ray's trial
    workers and Ray's own daemons."""
    import psutil

    seen: dict[tuple[int, float], float] = {}
    roles: dict[tuple[int, float], str] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                t = p.cpu_times()
                key = (p.pid, p.create_time())
                seen[key] = t.user + t.system
                if by_role is not None:  # a Ray worker is named ray::... only once it runs
                    name = p.name()
                    roles[key] = ("driver (screen process)" if p.pid == root.pid
                                  else "Ray workers (trials)" if name.startswith("ray::") and "Agent" not in name
                                  else "Ray daemons (GCS, raylet, dashboard, agents)")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        time.sleep(every_s)
    if by_role is not None:
        for key, secs in seen.items():
            role = roles.get(key, "Ray daemons (GCS, raylet, dashboard, agents)")
            by_role[role] = round(by_role.get(role, 0.0) + secs, 1)
    return sum(seen.values())


def run_emoloom(overrides: list[str], storage: Path, name: str, by_role: dict | None = None) -> dict:
    """`python -m emoloom.screen` with its defaults, in its own process (its Ray, its MLflow)."""
    log = storage / f"{name}.log"
    storage.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "emoloom.screen", *overrides, f"storage={storage}",
                                 f"name={name}"], cwd=REPO, stdout=f, stderr=subprocess.STDOUT, text=True)
        cpu = tree_cpu_seconds(proc, by_role=by_role)
    summaries = sorted(storage.glob(f"{name}-*/summary.json"), key=lambda p: p.stat().st_mtime)  # this run's last
    if proc.returncode != 0 or not summaries:
        raise RuntimeError(f"the screen failed ({proc.returncode}); its log: {log}")
    summary = json.loads(summaries[-1].read_text())
    best = summary["best"]
    journal = json.loads((summaries[-1].parent / "trials" / f"trial_{best['trial']}" / "journal.json").read_text())
    return {"summary": summary, "params": journal["view"]["params"], "objective": best["objective"], "cpu_s": cpu}


def default_overhead(out: Path) -> dict:
    """The embedded default screen (`python -m emoloom.screen`, no overrides): its wall time, the
    trials' busy time per slot, and where the rest goes (the screen's `phases_s`)."""
    dry = resolved_screen([])
    t0, by_role = time.time(), {}
    got = run_emoloom(["--rerun"], out / "screens", "vs-default", by_role)  # a finished one is run again
    return {**overhead_parts(got["summary"], time.time() - t0, int(dry["space"]["max_concurrent"])),
            "cpu_s": round(got["cpu_s"], 1), "cpu_by_role_s": by_role, "trial_timings": trial_timings(got)}


def trial_timings(got: dict) -> dict:
    """Summed over a finished screen's trials, from their journals (seconds of each trial's own
    clock): start-up (fit() to the first step: worker, imports, data, model), training steps,
    the epoch reports' rung signals, the final evaluation, and the rest of the trial's time
    (checkpoints, reports, tracking)."""
    trials = Path(got["summary"]["storage"]) / "trials"
    out = {"trials": 0, "startup_s": 0.0, "train_s": 0.0, "epoch_signals_s": 0.0, "final_eval_s": 0.0, "other_s": 0.0}
    for journal in sorted(trials.glob("trial_*/journal.json")):
        ops = [o["metrics"] for o in json.loads(journal.read_text()).get("ops", []) if o.get("op") == "metrics"]
        if not ops:
            continue
        first = next((m for m in ops if "startup_s" in m), {})
        train = sum(m.get("train_s", 0.0) for m in ops)
        signals = max([m.get("epoch_eval_seconds", 0.0) for m in ops] or [0.0])  # a running total
        final = sum(m.get("eval_seconds", 0.0) for m in ops)
        elapsed = max([m.get("elapsed_seconds", 0.0) for m in ops] or [0.0]) + final
        out["trials"] += 1
        out["startup_s"] += first.get("startup_s", 0.0)
        out["train_s"] += train
        out["epoch_signals_s"] += signals
        out["final_eval_s"] += final
        out["other_s"] += max(0.0, elapsed - first.get("startup_s", 0.0) - train - signals - final)
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}


def overhead_parts(s: dict, wall: float, concurrency: int) -> dict:
    """A finished screen's summary and the wall time of its process: overhead and its parts."""
    busy = s["ledger"]["totals"]["wall_s"] / max(1, concurrency)
    phases = dict(s.get("phases_s") or {})
    after_summary = phases.get("register", 0.0) + phases.get("tracking_finish", 0.0)
    parts = {"python start, imports, Ray shutdown": wall - s["wall_s"] - after_summary, **phases}
    parts["trials"] = busy  # training and evaluation, per slot
    parts["Tune: trial start-up, idle slots"] = phases.get("trials", 0.0) - busy
    return {"wall_s": round(wall, 1), "busy_s": round(busy, 1), "overhead_s": round(wall - busy, 1),
            "overhead_share": round((wall - busy) / wall, 4), "parts_s": {k: round(v, 1) for k, v in parts.items()}}


def overhead_table(d: dict) -> str:
    lines = ["| part of the default screen's wall time | s | share |", "|---|---|---|"]
    for k, v in sorted(d["parts_s"].items(), key=lambda kv: -kv[1]):
        name = "training + evaluation (trials, per slot)" if k == "trials" else k
        lines.append(f"| {name} | {v:.1f} | {v / d['wall_s']:.1%} |")
    lines.append(f"| **overhead (all but training + evaluation)** | **{d['overhead_s']:.1f}** | "
                 f"**{d['overhead_share']:.1%}** |")
    return "\n".join(lines)


# -- the bench ---------------------------------------------------------------------------------

def plan(args, spaces: dict[str, dict]) -> float:
    """Print the plan; the expected wall seconds from `--epoch-s` (one epoch of one trial)."""
    total_epochs = 0.0
    for corpus, space in spaces.items():
        epochs, n = int(space["fixed"]["epochs"]), int(space["num_trials"])
        full = n * epochs                          # optuna_tpe
        pruned = n * epochs * 0.6                  # hyperband / halving: roughly 40% fewer epochs
        grid = len(GRID_LR) * 2 * epochs
        screen = n * epochs * 0.7 / 2 * 1.3        # 2 trials at a time, ASHA, plus statistics
        truth = 4 * epochs * args.budget_x         # up to ~4 distinct picks per seed
        per_seed = full + 2 * pruned + grid + screen + truth
        total_epochs += per_seed * args.seeds
        print(f"  {corpus}: {n} trials x {epochs} epochs x {space['fixed'].get('steps_per_epoch')} steps; "
              f"strategies {', '.join(args.strategies)}; ground truth at {args.budget_x}x epochs; "
              f"~{per_seed:.0f} trial-epochs per seed")
    expected = total_epochs * args.epoch_s
    print(f"  expected: ~{expected / 60:.0f} min at ~{args.epoch_s:.0f} s per trial-epoch (incl. its evaluation), "
          f"{args.seeds} seed(s); results cached in {args.out}/results.json")
    return expected


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def key_of(params: dict, searched: list[str]) -> str:
    return json.dumps({k: params.get(k) for k in searched}, sort_keys=True)


def run_strategy(kind: str, trainer: Trainer, dry: dict, overrides: list[str], out: Path, tag: str) -> dict:
    t0, c0, busy0 = time.time(), cpu_seconds(), trainer.busy_s
    if kind == "emoloom":
        got = run_emoloom(overrides, out / "screens", tag)
        wall = time.time() - t0
        ledger = got["summary"]["ledger"]["totals"]
        concurrency = max(1, int(dry["space"]["max_concurrent"]))
        overhead = wall - ledger["wall_s"] / concurrency
        extra = {"trials": got["summary"]["trials"], "pruned": got["summary"]["stopped_early"],
                 "screen_statistics_s": got["summary"]["statistics_s"], "phases_s": got["summary"].get("phases_s")}
        c0 -= got["cpu_s"]  # its process tree, measured while it ran (not reaped by this process)
    else:
        got = run_optuna(kind, trainer, dry["space"], int(dry["space"]["seed"]))
        wall = time.time() - t0
        overhead = wall - (trainer.busy_s - busy0)
        extra = {"trials": got["trials"], "pruned": got["pruned"]}
    searched = list(dry["space"]["params"])
    params = {k: got["params"][k] if k in got["params"] else None for k in searched}
    params = {k: _typed(v) for k, v in params.items()}
    return {"params": params, "screen_objective": got["objective"], "cpu_s": round(cpu_seconds() - c0, 1),
            "wall_s": round(wall, 1), "overhead_s": round(overhead, 1), "overhead_share": round(overhead / wall, 4), **extra}


def _typed(value: Any) -> Any:
    """MLflow/journal params are text: numbers back to numbers."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def summarize(results: dict, corpora: list[str], strategies: list[str], seeds: int) -> list[dict]:
    rows = []
    for corpus in corpora:
        for kind in strategies:
            got = [results.get(f"{corpus}/s{s}/{kind}") for s in range(seeds)]
            got = [g for g in got if g and "full_objective" in g]
            if not got:
                continue

            def stat(field):
                vals = [g[field] for g in got]
                return statistics.mean(vals), min(vals), max(vals)

            rows.append({"corpus": corpus, "strategy": kind, "seeds": len(got), **{
                f: stat(f) for f in ("full_objective", "regret", "cpu_s", "wall_s", "overhead_s", "overhead_share")}})
    return rows


def table(rows: list[dict]) -> str:
    def fmt(t, nd):
        mean, lo, hi = t
        return f"{mean:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"

    lines = ["| corpus | strategy | seeds | picked: full-budget objective | regret | CPU-s | wall s | overhead s | overhead share |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['corpus']} | {r['strategy']} | {r['seeds']} | {fmt(r['full_objective'], 4)} | "
                     f"{fmt(r['regret'], 4)} | {fmt(r['cpu_s'], 0)} | {fmt(r['wall_s'], 0)} | "
                     f"{fmt(r['overhead_s'], 0)} | {fmt(r['overhead_share'], 3)} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = sorted({r["corpus"] for r in rows})
    fig, axes = plt.subplots(1, len(corpora), figsize=(6 * len(corpora), 4.5), squeeze=False)
    for ax, corpus in zip(axes[0], corpora):
        for r in (r for r in rows if r["corpus"] == corpus):
            (y, ylo, yhi), (x, xlo, xhi) = r["full_objective"], r["cpu_s"]
            ax.errorbar([x], [y], xerr=[[x - xlo], [xhi - x]], yerr=[[y - ylo], [yhi - y]], fmt="o", capsize=3,
                        label=r["strategy"])
        ax.set_xlabel("compute (CPU-seconds)")
        ax.set_ylabel("picked candidate: full-budget objective")
        ax.set_title(f"{corpus} (mean, min-max over seeds)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--corpora", default="synthetic,goemotions")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--budget-x", type=float, default=2.0, help="ground truth: this many times the screen's epochs")
    p.add_argument("--epoch-s", type=float, default=5.7,
                   help="for the plan: seconds per trial-epoch (5.7: measured on 2 cores, whole bench / planned epochs)")
    p.add_argument("--data-root", default=os.environ.get("EMOLOOM_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--out", default=str(REPO / "runs" / "bench-vs-peers"))
    p.add_argument("--plan", action="store_true", help="print the plan and exit")
    p.add_argument("--default-overhead", action="store_true",
                   help="also time the embedded default screen (no overrides) and break down its overhead")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a screen override for both sides, e.g. space.num_trials=4 (repeatable); "
                        f"default: {' '.join(DEFAULT_SET)} (the default space at 30 steps per epoch: 60 min measured)")
    args = p.parse_args(argv)
    args.set = args.set or list(DEFAULT_SET)
    args.strategies = [s for s in args.strategies.split(",") if s]
    unknown = sorted(set(args.strategies) - set(STRATEGIES))
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    corpora = [c for c in args.corpora.split(",") if c]
    if "goemotions" in corpora and not (Path(args.data_root) / "goemotions").is_dir():
        print(f"note: {args.data_root}/goemotions not found; the real-data rows are skipped", file=sys.stderr)
        corpora.remove("goemotions")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(2)  # the optuna loops run one trial at a time on both cores
    def overrides_of(corpus: str, seed: int) -> list[str]:
        return corpus_overrides(corpus, Path(args.data_root)) + args.set + [f"seed={seed}", f"space.seed={seed}"]

    drys = {(c, s): resolved_screen(overrides_of(c, s)) for c in corpora for s in range(args.seeds)}
    print(f"vs_peers on {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}")
    plan(args, {c: drys[(c, 0)]["space"] for c in corpora})
    if args.plan:
        return 0
    results_path = out / "results.json"
    results = load_results(results_path)
    for (corpus, seed), dry in drys.items():
        overrides = overrides_of(corpus, seed)
        trainer = Trainer(dry, out / "work" / f"{corpus}-s{seed}")
        searched = list(dry["space"]["params"])
        for kind in args.strategies:
            key = f"{corpus}/s{seed}/{kind}"
            if key in results:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {key} (load {os.getloadavg()[0]:.2f})", flush=True)
            results[key] = run_strategy(kind, trainer, dry, overrides, out, f"vs-{corpus}-s{seed}")
            save_results(results_path, results)
        # ground truth: every distinct pick of this seed, at budget_x times the epochs
        truth_key = f"{corpus}/s{seed}/truth"
        truth = results.setdefault(truth_key, {})
        epochs = int(round(float(dry["space"]["fixed"]["epochs"]) * args.budget_x))
        for kind in args.strategies:
            pick = key_of(results[f"{corpus}/s{seed}/{kind}"]["params"], searched)
            if pick not in truth:
                print(f"[{time.strftime('%H:%M:%S')}] {corpus}/s{seed} ground truth for {pick} at {epochs} epochs", flush=True)
                truth[pick] = trainer.train_and_score(json.loads(pick), epochs)
                save_results(results_path, results)
        best = max(truth.values())
        for kind in args.strategies:
            r = results[f"{corpus}/s{seed}/{kind}"]
            r["full_objective"] = truth[key_of(r["params"], searched)]
            r["regret"] = round(best - r["full_objective"], 4)
        save_results(results_path, results)
    if args.default_overhead and "default_overhead" not in results:
        print(f"[{time.strftime('%H:%M:%S')}] the embedded default screen (load {os.getloadavg()[0]:.2f})", flush=True)
        results["default_overhead"] = default_overhead(out)
        save_results(results_path, results)
    rows = summarize(results, corpora, args.strategies, args.seeds)
    text = table(rows) if rows else ""
    if "default_overhead" in results:
        text += "\n\n" + overhead_table(results["default_overhead"])
    (out / "table.md").write_text(text.strip() + "\n")
    if rows:  # `--corpora '' --default-overhead`: the overhead table alone
        plot(rows, out / "picked_vs_compute.png")
    print(text)
    print(f"\ntable: {out / 'table.md'}   plot: {out / 'picked_vs_compute.png'}   load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
