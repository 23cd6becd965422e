"""`python -m emoloom train [CONFIG.yaml] [key=value ...]`: train one candidate."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="LoRA SFT of one candidate (EmoLoom objective; in-process or Ray Train + DeepSpeed)",
        description="Train one candidate and write <out>/adapter, heads.pt, config.yaml and metrics.json. "
                    "Without CONFIG: the embedded default (built-in tiny model, synthetic corpus). "
                    "Overrides are dotted keys, e.g. max_steps=50 seed=1 out=runs/x optim.lr=1e-3 "
                    "distributed.num_workers=2.",
    )
    p.add_argument("config", nargs="?", help="YAML TrainConfig (keys as in emoloom/train/config.py)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emoloom.config import ConfigError, dump_yaml, load_config
    from emoloom.paths import expand, train_paths
    from emoloom.train.config import DEFAULT_RUN, TrainConfig

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        overrides.insert(0, config)  # `train max_steps=5`: no CONFIG, only overrides
        config = None
    try:
        cfg = load_config(TrainConfig, config, overrides, base=None if config else DEFAULT_RUN)
        # Ray Train workers run in a directory of their own: inputs and `out` resolved here.
        here = Path.cwd()
        cfg = TrainConfig.model_validate({**train_paths(cfg.model_dump(), here), "out": str(here / expand(str(cfg.out)))})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    from emoloom.models import ModelUnavailable, model_path
    from emoloom.train import fit
    from emoloom.train.loop import NonFiniteLossError

    try:
        model_path(cfg.model)  # builds or converts the base model once, before any worker starts
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = fit(cfg)
    except NonFiniteLossError as exc:  # diverged: the step and the term say it all, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    last = result.metrics["epochs"][-1] if result.metrics.get("epochs") else {}
    summary = {k: last.get(k) for k in ("loss", "dev_head_macro_f1", "dev_vad_rmse", "dev_sft_loss", "tokens_per_s")}
    print(json.dumps({"out": str(result.out), "steps": result.metrics["steps"], **summary,
                      "fit_s": round(result.fit_s, 1)}))
    return 0
