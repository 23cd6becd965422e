"""Training benchmark: throughput of Ray Train + DeepSpeed vs in-process, loss curves, ParseOK.

    .venv/bin/python bench/train_speed.py                 # all three parts
    .venv/bin/python bench/train_speed.py --part speed --strategies deepspeed,ddp
    .venv/bin/python bench/train_speed.py --part recipe    # loss curves + ParseOK of the default run

speed:  the same model, data, batch and seed trained in-process (no Ray) and by Ray Train with
        `--workers` CPU workers (DeepSpeed ZeRO-2 on gloo; DDP with --strategies deepspeed,ddp), one
        torch thread per worker; in-process runs with 1 and with 2 threads. tokens/s counts non-padding
        tokens of the training steps only (start-up, dev evaluation and checkpoints excluded),
        averaged over the epochs after the first; "aggregate" is all workers together, "per
        worker" the mean of the workers' own rates. start-up = from fit() to the first step.
recipe: the embedded default run of `python -m emoloom train`: per loss term, the mean of the
        first and last 10% of steps; then greedy decoding (use_cache=False) of 100 dev prompts
        and the share that `contract.parse_output` accepts (ParseOK).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def steady_rate(metrics: dict, key: str) -> float:
    epochs = metrics["epochs"][1:] or metrics["epochs"]
    return sum(e[key] for e in epochs) / len(epochs)


def part_speed(args, work: Path) -> None:
    import ray

    from emoloom.config import load_config
    from emoloom.train import TrainConfig, fit

    base = [f"model.name={args.model}", f"steps_per_epoch={args.steps // 4}", "epochs=4", "log_every=100000",
            f"optim.batch_size={args.batch}", "resume=false"]
    rows = []

    def run(label: str, *extra: str, storage=None) -> None:
        cfg = load_config(TrainConfig, None, [*base, f"out={work / label.replace(' ', '_')}", *extra])
        t0 = time.time()
        res = fit(cfg, storage_path=storage)
        m = res.metrics
        rows.append({
            "run": label, "workers": cfg.distributed.num_workers or "in-process",
            "threads/worker": cfg.distributed.torch_threads or cfg.distributed.cpus_per_worker,
            "tokens/s aggregate": round(steady_rate(m, "tokens_per_s")),
            "tokens/s per worker": round(steady_rate(m, "tokens_per_s_worker")),
            "start-up s": round(m["startup_s"], 1), "fit s": round(time.time() - t0, 1),
            "final loss": round(m["epochs"][-1]["loss"], 3),
        })

    run("in-process 1 thread")
    run("in-process 2 threads", "distributed.torch_threads=2")
    t0 = time.time()
    ray.init(address="local", num_cpus=max(2, args.workers), include_dashboard=False, log_to_driver=False)
    ray_init = time.time() - t0
    try:
        for strategy in args.strategies.split(","):
            label = "ray deepspeed zero2" if strategy == "deepspeed" else f"ray {strategy}"
            run(label, f"distributed.num_workers={args.workers}", f"distributed.strategy={strategy}",
                "distributed.zero_stage=2", storage=work / "ray")
    finally:
        ray.shutdown()
    ref = rows[0]["tokens/s aggregate"]
    for r in rows:
        r["aggregate / in-process(1t)"] = f"{r['tokens/s aggregate'] / ref:.2f}x"
        r["per worker / in-process(1t)"] = f"{r['tokens/s per worker'] / ref:.2f}x"
    print(f"\n## Throughput: {args.model}, batch {args.batch}/worker, {args.steps} steps, synthetic GoEmotions "
          f"({os.cpu_count()} CPU cores; ray.init {ray_init:.1f} s, not in start-up)\n")
    print(table(rows, ["run", "workers", "threads/worker", "tokens/s aggregate", "tokens/s per worker",
                       "aggregate / in-process(1t)", "per worker / in-process(1t)", "start-up s", "fit s",
                       "final loss"]))


def part_recipe(args, work: Path) -> None:
    import torch

    from emoloom.train import default_config, fit
    from emoloom.eval.run import EvalConfig, evaluate
    from emoloom.train.examples import prepare_data

    cfg = default_config([f"out={work / 'default'}", "resume=false", "log_every=100000"])
    t0 = time.time()
    res = fit(cfg)
    fit_s = time.time() - t0
    m = res.metrics
    rows = []
    for term, values in {**m["loss_terms"], "total": m["loss"]}.items():
        k = max(1, len(values) // 10)
        first, last = sum(values[:k]) / k, sum(values[-k:]) / k
        rows.append({"term": term, "first 10%": f"{first:.4f}", "last 10%": f"{last:.4f}",
                     "last/first": f"{last / first:.3f}", "falls": "yes" if last < first else "NO"})
    print(f"\n## Loss curves: default run ({cfg.model.name}, {m['steps']} steps, fit {fit_s:.0f} s, "
          f"start-up {m['startup_s']:.1f} s, {m['tokens_per_s']:.0f} tokens/s)\n")
    print(table(rows, ["term", "first 10%", "last 10%", "last/first", "falls"]))
    print("\nper epoch: " + "; ".join(
        f"epoch {e['epoch']}: dev_head_macro_f1={e['dev_head_macro_f1']:.3f} dev_vad_rmse={e['dev_vad_rmse']:.3f} "
        f"dev_sft_loss={e['dev_sft_loss']:.3f}" for e in m["epochs"]))

    torch.set_num_threads(1)
    dev = prepare_data(cfg).dev[:100]
    t0 = time.time()
    result = evaluate(EvalConfig(model=cfg.model, adapter=str(res.adapter), decoder="reference",
                                 max_new_tokens=80, bootstrap=0), dev, log=lambda _msg: None)
    rate = result["metrics"]["all"]["parse_ok_rate"]
    print(f"\n## ParseOK: greedy decoding (use_cache=False, stop at eos / closed JSON) of {len(dev)} dev prompts: "
          f"{rate:.0%} ({time.time() - t0:.0f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["speed", "recipe", "all"], default="all")
    parser.add_argument("--model", default="tiny-qwen2")
    parser.add_argument("--steps", type=int, default=80, help="speed: optimizer steps per run (4 epochs)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--strategies", default="deepspeed", help="comma-separated: deepspeed, ddp")
    parser.add_argument("--work", help="folder for the runs (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="emoloom-bench-") as tmp:
        work = Path(args.work or tmp)
        os.environ.setdefault("EMOLOOM_CACHE", str(work / "cache"))
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(work / "torch_extensions"))
        if args.part in ("recipe", "all"):
            part_recipe(args, work)
        if args.part in ("speed", "all"):
            part_speed(args, work)
        built = list(Path(os.environ["TORCH_EXTENSIONS_DIR"]).rglob("*.so"))
        print(f"\nJIT-built ops in TORCH_EXTENSIONS_DIR: {len(built)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
