"""The learning-rate schedule: transformers' `get_scheduler`, as HF Trainer uses it.

`optim.schedule` maps onto transformers' schedules, warmup included:

    constant -> "constant_with_warmup"
    linear   -> "polynomial" with power 1 and lr_end = min_lr_ratio * lr (decays to the floor)
    cosine   -> "cosine_with_min_lr" with min_lr_rate = min_lr_ratio

The scheduler is a torch `LambdaLR` on the client optimizer (the torch AdamW, also under
DeepSpeed), stepped once per optimizer step; its state travels in every checkpoint
(`scheduler.pt`), so a resumed run continues the same curve.

Against the hand-written schedule it replaced (measured over cluster/screen_gpu.yaml's training
config, 3 epochs of 500 steps, warmup 20; pinned in tests/test_train.py
`test_lr_schedule_is_transformers_get_scheduler`): warmup runs one step later (step s uses
s / warmup_steps, so the first step has rate 0, where the old one used (s + 1) / warmup_steps), and
the decay reaches the floor one step after the last step instead of at it: after warmup the two
differ by at most 5.6e-4 (cosine) / 6.1e-4 (linear) of the base rate. No measured reason to keep
the hand-written one.
"""
from __future__ import annotations

from typing import Any

from emoloom.train.config import TrainConfig


def build_scheduler(cfg: TrainConfig, optimizer: Any, total_steps: int):
    """A transformers LR scheduler for `optimizer` (whose param groups hold the base rates)."""
    from transformers import get_scheduler

    o = cfg.optim
    warmup = min(o.warmup_steps, total_steps)
    lr = optimizer.defaults["lr"]
    if o.schedule == "cosine":
        return get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=warmup, num_training_steps=total_steps,
                             scheduler_specific_kwargs={"min_lr_rate": o.min_lr_ratio})
    if o.schedule == "linear" and lr > 0 and o.min_lr_ratio < 1:
        # polynomial(power=1) is linear decay with a floor; transformers' "linear" decays to 0
        return get_scheduler("polynomial", optimizer, num_warmup_steps=warmup, num_training_steps=total_steps,
                             scheduler_specific_kwargs={"lr_end": o.min_lr_ratio * lr, "power": 1.0})
    # constant, or a linear "decay" that cannot move (lr 0 or a floor of 1): the same curve
    return get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=warmup)
