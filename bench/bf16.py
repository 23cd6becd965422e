"""bf16 against fp32 on the CPU, one run: LoRA training throughput and KV-off decoding of a real model.

    .venv/bin/python bench/bf16.py --adapter runs/train-smollm2/adapter        # 200 GoEmotions dev rows
    .venv/bin/python bench/bf16.py --rows 40 --train-steps 4                    # a quick look

Training: `--train-steps` LoRA steps (batch 8, the full EmoLoom objective, first --train-rows
GoEmotions training rows) with `distributed.bf16=false` and `true` (base weights loaded in the
precision the loop computes in); tokens/s over the steps only.
Decoding: the fast KV-off decoder on --rows GoEmotions dev rows with the model in float32 and in
bfloat16 (adapter merged), in one process: examples/s, near ties (greedy choices whose top-2 gap
was within the dtype's resolution), ParseOK, Macro-F1 (parse failures count as wrong), and the
share of rows whose raw output is identical in both, and whose labels are. `auto` picks bf16 on
this CPU when it has AMX or AVX512-BF16 (`emoloom.models.cpu_bf16`). A script that prints a
table; run it idle.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _env import DATA, markdown_table  # noqa: E402 - bench/ is sys.path[0]


def train_rows(args, work: Path) -> list[dict]:
    from emoloom.config import load_config
    from emoloom.train import TrainConfig, fit

    source = {"corpus": "goemotions", "source": str(DATA), "split": "train", "dev_split": "dev", "pool": "A",
              "limit": args.train_rows}
    rows = []
    for bf16 in (False, True):
        cfg = load_config(TrainConfig, None, [
            f"model.name={args.model}", f"max_steps={args.train_steps}", f"steps_per_epoch={args.train_steps}",
            "data.dev_size=8", "resume=false", f"distributed.bf16={str(bf16).lower()}",
            f"distributed.torch_threads={args.threads}", f"out={work / f'train-{bf16}'}", "log_every=100000"],
            base={"data": {"sources": [source]}})
        m = fit(cfg).metrics
        # (no memory column: both runs share this process, whose peak RSS only grows)
        rows.append({"part": "train", "precision": m["precision"], "tokens_per_s": round(m["tokens_per_s"], 1)})
        print(rows[-1], flush=True)
    rows[1]["x_fp32"] = round(rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"], 2)
    return rows


def decode_rows(args, work: Path) -> list[dict]:
    from emoloom.data import load_corpus
    from emoloom.eval.run import EvalConfig, evaluate
    from emoloom.models import ModelSpec

    records = load_corpus("goemotions", DATA, "dev", limit=args.rows).with_weak_vad()
    rows, raws = [], {}
    for dtype in ("float32", "bfloat16"):
        out = work / f"eval-{dtype}"
        cfg = EvalConfig(model=ModelSpec(name=args.model, dtype=dtype), adapter=args.adapter, actors=0,
                         max_new_tokens=args.max_new_tokens, batch_size=16, bootstrap=0, out=str(out))
        t0, c0 = time.perf_counter(), time.process_time()
        result = evaluate(cfg, records, log=lambda _msg: None)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        raws[dtype] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        m = result["metrics"]["all"]
        rows.append({"part": "decode", "precision": dtype, "examples_per_s": round(len(records) / wall, 3),
                     "examples_per_cpu_s": round(len(records) / cpu, 3), "near_ties": result["near_ties"],
                     "forwards_per_example": result["forwards_per_example"], "parse_ok": m["parse_ok_rate"],
                     "macro_f1": round(m["all_rows"]["labels"]["macro_f1"], 4)})
        print(rows[-1], flush=True)
    pairs = list(zip(raws["float32"], raws["bfloat16"]))
    rows[1]["x_fp32"] = round(rows[1]["examples_per_s"] / rows[0]["examples_per_s"], 2)
    rows[1]["identical_to_fp32"] = round(sum(a["raw"] == b["raw"] for a, b in pairs) / len(pairs), 3)
    rows[1]["labels_as_fp32"] = round(sum(a["labels"] == b["labels"] for a, b in pairs) / len(pairs), 3)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--adapter", default=None, help="LoRA adapter for the decoding rows (default: the base model)")
    p.add_argument("--rows", type=int, default=200, help="GoEmotions dev rows decoded (0: skip decoding)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=8, help="0: skip training")
    p.add_argument("--train-rows", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", help="folder for the runs (default: a temporary folder)")
    args = p.parse_args()

    import torch

    from emoloom.models import cpu_bf16

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="emoloom-bf16-"))
    print(f"# {args.model}; CPU bf16 units (AMX/AVX512-BF16): {cpu_bf16()}; {args.threads} threads; "
          f"load before {os.getloadavg()[0]:.2f}", flush=True)
    rows = (train_rows(args, work) if args.train_steps else []) + (decode_rows(args, work) if args.rows else [])
    columns = ["part", "precision", "tokens_per_s", "examples_per_s", "examples_per_cpu_s",
               "forwards_per_example", "near_ties", "parse_ok", "macro_f1", "identical_to_fp32", "labels_as_fp32", "x_fp32"]
    print(markdown_table(rows, columns))
    print(f"# load after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
