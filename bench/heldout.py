"""A screen's pick trained longer and scored on held-out rows against the TF-IDF floor fitted on the
same training rows, with paired 95% intervals.

    .venv/bin/python bench/heldout.py --screen /tmp/smol/runs/smollm2-<hash> --steps 300 --rows 1000
    .venv/bin/python bench/heldout.py --screen <folder> --trial 4ff8a82d --source <dir with test.tsv> --split test

Takes the best finished trial of the screen folder (or --trial), trains its own training config
again for --steps optimizer steps (`max_steps`, same data, precision `auto`), and decodes KV-off
(--max-new-tokens, the fast decoder) --rows held-out GoEmotions rows: by default dev rows that are
NOT in the screen's evaluation sample (seeded draw), or any split given with --source/--split
(e.g. the test split, where a user has it). The majority-label and TF-IDF + logistic regression
floors are fitted on the trial's training rows (augmented copies left out, as the screen's floors)
and scored on the same rows; `eval.paired.paired_bootstrap` gives each a 95% interval and the
candidate's difference to each floor. Prints a table with the training steps, wall and CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from _env import DATA  # noqa: E402 - bench/ is sys.path[0]


def best_trial(screen: Path) -> str:
    best = json.loads((screen / "summary.json").read_text()).get("best")
    if not best:
        raise SystemExit(f"{screen}/summary.json: no finished trial to take; pass --trial")
    return str(best["trial"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--screen", required=True, help="a screen folder (<storage>/<name>-<hash>)")
    p.add_argument("--trial", help="trial id (default: the screen's best finished trial)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rows", type=int, default=1000, help="held-out rows decoded")
    p.add_argument("--source", default=str(DATA), help="GoEmotions folder or file of the held-out rows")
    p.add_argument("--split", default="dev", help="dev: rows outside the screen's evaluation sample")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", help="folder for the run (default: a temporary folder)")
    args = p.parse_args()

    import torch
    import yaml

    from emoloom.data import load_corpus
    from emoloom.eval.paired import paired_bootstrap
    from emoloom.eval.run import EvalConfig, evaluate
    from emoloom.screen.floors import compute_floors
    from emoloom.train import TrainConfig, fit
    from emoloom.train.examples import prepare_data

    torch.set_num_threads(args.threads)
    screen = Path(args.screen)
    trial = args.trial or best_trial(screen)
    folder = next(screen.glob(f"trials/trial_*{trial}*"), None)
    if folder is None:
        raise SystemExit(f"{screen}/trials: no trial {trial}")
    work = Path(args.work or tempfile.mkdtemp(prefix="emoloom-heldout-"))
    cfg = TrainConfig.model_validate(yaml.safe_load((folder / "train" / "config.yaml").read_text()))
    cfg = cfg.model_copy(update={"max_steps": args.steps, "out": str(work / "train"), "resume": True,
                                 "distributed": cfg.distributed.model_copy(update={"torch_threads": args.threads})})

    excluded = set(json.loads((screen / "eval_sample.json").read_text())["ids"]) if args.split == "dev" else set()
    pool = [r for r in load_corpus("goemotions", args.source, args.split).with_weak_vad() if r.id not in excluded]
    records = random.Random(args.seed).sample(pool, min(args.rows, len(pool)))
    print(f"# trial {trial} ({cfg.model.name}, lr {cfg.lr():g}, LoRA r {cfg.lora.r}) trained {args.steps} steps; "
          f"{len(records)} held-out GoEmotions {args.split} rows (of {len(pool)}{' outside the evaluation sample' if excluded else ''}); "
          f"load before {os.getloadavg()[0]:.2f}", flush=True)

    t0, c0 = time.perf_counter(), time.process_time()
    result = fit(cfg)
    train_wall, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"trained: {result.metrics['steps']} steps, {train_wall:.0f} s wall, {train_cpu:.0f} CPU-s, "
          f"precision {result.metrics['precision']}", flush=True)

    t0 = time.perf_counter()
    out = work / "heldout"
    evaluate(EvalConfig(model=cfg.model, adapter=str(result.adapter), actors=0, max_new_tokens=args.max_new_tokens,
                        batch_size=16, bootstrap=0, out=str(out)), records, log=lambda _msg: None)
    eval_wall = time.perf_counter() - t0
    rows = {"candidate": [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]}

    prepared = prepare_data(cfg)
    train = [r for r in prepared.pool_a + prepared.pool_b if not r.meta.get("flip_of")]
    floors = compute_floors(train, {"heldout": records}, work / "floors", seed=args.seed, bootstrap=0)
    for name, per in floors["floors"].items():
        rows[f"floor_{name}"] = per["heldout"]["rows"]
    stats = paired_bootstrap(rows, seed=args.seed)
    parse_ok = {k: sum(bool(r.get("parse_ok")) for r in v) / len(v) for k, v in rows.items()}
    print(f"decoded {len(records)} rows in {eval_wall:.0f} s ({len(records) / eval_wall:.2f} ex/s)")
    print("| model | Macro-F1 (failures wrong) | 95% interval | leader - it | its 95% interval | ParseOK |")
    print("|---|---|---|---|---|---|")
    for name in stats["ranking"]:
        t = stats["trials"][name]
        print(f"| {name} | {t['objective']:.3f} | [{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}] | {t['diff_to_leader']:.3f} "
              f"| [{t['diff_ci95'][0]:.3f}, {t['diff_ci95'][1]:.3f}] | {parse_ok[name]:.3f} |")
    print(f"# leader {stats['leader']}; load after {os.getloadavg()[0]:.2f}")
    (work / "heldout.json").write_text(json.dumps({"trial": trial, "steps": args.steps, "train_wall_s": train_wall,
                                                   "train_cpu_s": train_cpu, "eval_wall_s": eval_wall,
                                                   "paired": stats, "parse_ok": parse_ok}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
