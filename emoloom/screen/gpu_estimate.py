"""GPU-hours of a GPU screen from rates measured on a GPU (`bench/gpu_check.py` writes them).

`--dry-run` of a screen whose trials hold GPUs adds `gpu_estimate`: per trial, the training time
(optimizer steps x aggregate batch / measured LoRA SFT examples per second per GPU, times the
DeepSpeed ranks) and the evaluation time (decoded rows / measured fast-decoder examples per
second), and the screen's GPU-hours if every trial ran to ASHA's max_t (an upper bound: ASHA
stops most trials earlier). Without measured rates it says so and estimates nothing: a number
from a CPU or a guessed peak would look as trustworthy as a measured one.

Assumptions, also printed with the estimate: training examples of the bench's sequence length;
ranks scale linearly (no communication cost); decoding as slow as the bench's random-init model,
which never stops before max_new_tokens (so evaluation time is an upper bound too).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RATES_FILE = Path(__file__).resolve().parents[2] / "bench" / "gpu_rates.json"
NO_RATES = "no measured GPU rates; run bench/gpu_check.py on a GPU machine (it writes bench/gpu_rates.json)"


def load_rates(path: str | Path | None = None) -> dict | None:
    p = Path(path) if path else RATES_FILE
    if not p.exists():
        return None
    rates = json.loads(p.read_text())
    if rates.get("cpu_smoke"):  # a smoke run's CPU numbers are not GPU rates
        return None
    return rates


def _train_rate(rates: dict, model: str | None, batch_size: int) -> dict | None:
    rows = [r for r in rates.get("train", []) if r.get("tokens_per_s") and (model is None or r["model"] == model)]
    if not rows:
        return None
    # the measured batch closest to the config's per-GPU batch
    return min(rows, key=lambda r: (abs(r["batch_size"] - batch_size), -r["batch_size"]))


def _decode_rate(rates: dict, decoder: str) -> dict | None:
    rows = [r for r in rates.get("decode", []) if r.get("examples_per_s") and r["decoder"] == decoder]
    bf16 = [r for r in rows if r.get("dtype") == "bfloat16"]  # what a GPU evaluation runs in
    return (bf16 or rows or [None])[0]


def trial_estimate(*, steps: int, batch_size: int, grad_accum: int, train_workers: int, eval_rows: int,
                   max_new_tokens: int, decoder: str, rates: dict, model: str | None = None) -> dict[str, Any]:
    """Seconds of one trial (training + evaluation) from measured rates (see the module docstring)."""
    train = _train_rate(rates, model, batch_size)
    decode = _decode_rate(rates, decoder)
    if train is None or decode is None:
        return {"skipped": f"bench/gpu_rates.json has no {'training' if train is None else decoder + ' decoding'} "
                           f"rate{' for ' + model if model and train is None else ''}"}
    examples = steps * batch_size * grad_accum * max(1, train_workers)
    per_gpu = train["tokens_per_s"] / train["seq_len"]
    train_s = examples / (per_gpu * max(1, train_workers))
    # decoding cost ~ new tokens: rescale the bench's max_new_tokens to the screen's
    eval_s = eval_rows / decode["examples_per_s"] * max_new_tokens / decode["max_new_tokens"]
    return {"model_measured": train["model"], "train_batch_measured": train["batch_size"],
            "train_examples": examples, "train_s": round(train_s, 1), "eval_rows": eval_rows,
            "eval_s": round(eval_s, 1), "trial_s": round(train_s + eval_s, 1)}


def estimate_gpu_hours(cfg, space, rates: dict | None = None, rates_path: str | Path | None = None) -> dict:
    """The dry run's `gpu_estimate` section ({} for a screen whose trials hold no GPU)."""
    from emoloom.screen.plan import trial_demand

    r = cfg.resources
    if trial_demand(cfg)["GPU"] <= 0:
        return {}
    rates = rates if rates is not None else load_rates(rates_path)
    if rates is None:
        return {"gpu_estimate": {"skipped": NO_RATES}}
    from emoloom.screen.run import base_train_config

    train = base_train_config(cfg, space)
    epochs = space.asha.max_t if space.asha.enabled and space.asha.time_attr == "epoch" else train.epochs
    if train.max_steps is not None:
        steps = train.max_steps
    elif train.steps_per_epoch is not None:
        steps = epochs * train.steps_per_epoch
    else:
        return {"gpu_estimate": {"skipped": "train.steps_per_epoch is not set: steps per epoch depend on the data"}}
    e = cfg.eval
    eval_rows = (epochs * e.epoch_limit + (e.dev_limit or 0) + sum(s.limit or 0 for s in e.cross_corpus))
    train_gpus = r.train_workers * r.gpus_per_worker
    eval_gpus = max(r.eval_actors * r.gpus_per_eval_actor, 0.0)
    per_model = {}
    for model in sorted({row["model"] for row in rates.get("train", [])}):
        t = trial_estimate(steps=steps, batch_size=train.optim.batch_size, grad_accum=train.optim.grad_accum,
                           train_workers=r.train_workers, eval_rows=eval_rows, max_new_tokens=e.max_new_tokens,
                           decoder=e.decoder, rates=rates, model=model)
        if "trial_s" in t:
            gpu_s = t["train_s"] * train_gpus + t["eval_s"] * eval_gpus
            t["gpu_hours_per_trial"] = round(gpu_s / 3600, 3)
            t["screen_gpu_hours_upper_bound"] = round(space.num_trials * gpu_s / 3600, 2)
        per_model[model] = t
    return {"gpu_estimate": {
        "rates": {"file": str(rates_path or RATES_FILE), "device": (rates.get("device") or {}).get("name"),
                  "measured": rates.get("measured")},
        "trials": space.num_trials, "epochs_per_trial": epochs, "steps_per_trial": steps,
        "train_gpus": train_gpus, "eval_gpus": eval_gpus, "by_measured_model": per_model,
        "assumptions": ["every trial runs to ASHA max_t (upper bound)",
                        f"training examples of {_seq_len(rates)} tokens; DeepSpeed ranks scale linearly",
                        "decoding at the bench's random-init rate, rows decode to max_new_tokens (upper bound)",
                        "a candidate's time scales with its FLOPs per token: pick the measured model nearest in size"],
    }}


def _seq_len(rates: dict) -> int | str:
    lens = {r.get("seq_len") for r in rates.get("train", [])}
    return lens.pop() if len(lens) == 1 else "the bench's"


__all__ = ["NO_RATES", "RATES_FILE", "estimate_gpu_hours", "load_rates", "trial_estimate"]
