"""Which prompt format a chat model screens best with: zero-shot and after a short LoRA SFT.

    .venv/bin/python bench/chat_template.py                       # smollm2-135m, 100 dev rows, 60 steps
    .venv/bin/python bench/chat_template.py --steps 30 --limit 40 --variants default

For each `model.chat_system` variant (`default`: the chat template writes its own system line;
`empty`: an empty system message instead) the bench decodes GoEmotions dev rows KV-off with the
base model (step 0), trains a LoRA SFT with the full EmoLoom objective on the first --train-rows
GoEmotions training rows (precision `auto`: bf16 where the CPU has AMX/AVX512-BF16), and decodes
the same rows again. It prints ParseOK, Macro-F1 (parse failures count as wrong: the screen's
objective) and the Macro-F1 of ParseOK rows, with the seconds each phase took. A script that
prints a table, not a timed test; measure on an idle machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _env import DATA, markdown_table  # noqa: E402 - bench/ is sys.path[0]


def scores(spec, adapter, records, max_new_tokens: int) -> dict:
    from emoloom.eval.run import EvalConfig, evaluate

    t0 = time.time()
    result = evaluate(EvalConfig(model=spec, adapter=adapter, actors=0, max_new_tokens=max_new_tokens, bootstrap=0),
                      records, log=lambda _msg: None)
    m = result["metrics"]["all"]
    return {"parse_ok": m["parse_ok_rate"], "macro_f1": m["all_rows"]["labels"]["macro_f1"],
            "macro_f1_ok_rows": m["ok_only"]["labels"]["macro_f1"], "eval_s": round(time.time() - t0, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--variants", default="default,empty", help="comma-separated chat_system values")
    p.add_argument("--limit", type=int, default=100, help="GoEmotions dev rows decoded")
    p.add_argument("--train-rows", type=int, default=8000)
    p.add_argument("--steps", type=int, default=60, help="LoRA SFT steps (batch 8); 0: zero-shot only")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", help="folder for the adapters (default: a temporary folder)")
    args = p.parse_args()

    import torch

    from emoloom.config import load_config
    from emoloom.data import load_corpus
    from emoloom.models import ModelSpec
    from emoloom.train import TrainConfig, fit

    torch.set_num_threads(args.threads)
    records = load_corpus("goemotions", DATA, "dev", limit=args.limit).with_weak_vad()
    work = Path(args.work or tempfile.mkdtemp(prefix="emoloom-chat-"))
    print(f"# {args.model}, {len(records)} GoEmotions dev rows, SFT {args.steps} steps on {args.train_rows} "
          f"training rows, lr {args.lr}, max_new_tokens {args.max_new_tokens}; load before "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for variant in args.variants.split(","):
        spec = ModelSpec(name=args.model, chat_system=variant)
        rows.append({"chat_system": variant, "step": 0, **scores(spec, None, records, args.max_new_tokens)})
        print(rows[-1], flush=True)
        if args.steps:
            source = {"corpus": "goemotions", "source": str(DATA), "split": "train", "dev_split": "dev",
                      "pool": "A", "limit": args.train_rows}
            cfg = load_config(TrainConfig, None, [
                f"model.name={args.model}", f"model.chat_system={variant}", f"max_steps={args.steps}",
                f"optim.lr={args.lr}", "optim.warmup_steps=5", "data.dev_size=16", "resume=false",
                f"distributed.torch_threads={args.threads}", f"out={work / variant}", "log_every=1000"],
                base={"data": {"sources": [source]}})
            t0 = time.time()
            result = fit(cfg)
            train_s = time.time() - t0
            rows.append({"chat_system": variant, "step": args.steps, "train_s": round(train_s, 1),
                         "precision": result.metrics.get("precision"),
                         **scores(spec, str(result.adapter), records, args.max_new_tokens)})
            print(rows[-1], flush=True)
    columns = ["chat_system", "step", "parse_ok", "macro_f1", "macro_f1_ok_rows", "train_s", "eval_s", "precision"]
    print(markdown_table(rows, columns))
    print(f"# load after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
