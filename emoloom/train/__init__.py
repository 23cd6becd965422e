"""LoRA SFT of one candidate with the EmoLoom objective, in-process or on Ray Train + DeepSpeed.

Public API (what the screen calls)::

    from emoloom.train import TrainConfig, fit, train_loop_per_worker
    cfg = load_config(TrainConfig, "candidate.yaml", ["optim.lr=1e-3"])
    result = fit(cfg, callbacks=[TuneReportCallback()], storage_path="...")   # -> TrainResult
    result.metrics["loss_terms"], result.last("dev_head_macro_f1"), result.adapter
    # a NaN/inf loss term or gradient norm raises NonFiniteLossError ("step 2: loss term 'sft' is nan ...")

One GPU: `distributed.use_gpu=true` with the default `distributed.num_workers=0` trains in this
process (bf16 autocast where supported); several GPUs: Ray Train + DeepSpeed ZeRO (num_workers=N).
Heavy libraries (torch, peft, deepspeed, ray) load only when training starts.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emoloom.train.config import TrainConfig, default_config

if TYPE_CHECKING:
    from emoloom.train.ray_fit import TrainResult

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "default_config", "fit", "train_loop_per_worker"]


def fit(cfg: TrainConfig, *, callbacks=(), storage_path=None, epoch_hook=None) -> "TrainResult":
    """See `emoloom.train.ray_fit.fit`."""
    from emoloom.train.ray_fit import fit as _fit

    return _fit(cfg, callbacks=callbacks, storage_path=storage_path, epoch_hook=epoch_hook)


def train_loop_per_worker(config: dict) -> dict:
    from emoloom.train.loop import train_loop_per_worker as _loop

    return _loop(config)


def __getattr__(name: str) -> Any:
    if name == "TrainResult":
        from emoloom.train.ray_fit import TrainResult

        return TrainResult
    if name == "NonFiniteLossError":
        from emoloom.train.loop import NonFiniteLossError

        return NonFiniteLossError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
