"""Where the loop runs: rank, world size, device, and the device's precision and memory.

In-process (`distributed.num_workers == 0`) the loop uses one CUDA device when
`distributed.use_gpu` is set and the CPU otherwise; Ray Train workers get their rank and device
from `ray.train`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any


@dataclass
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    ray_train: bool = False
    in_tune: bool = False
    device: Any = "cpu"

    @classmethod
    def detect(cls, ray_train: bool, use_gpu: bool = False) -> "WorkerContext":
        if ray_train:
            import ray.train
            import ray.train.torch

            c = ray.train.get_context()
            return cls(rank=c.get_world_rank(), world_size=c.get_world_size(), local_rank=c.get_local_rank(),
                       ray_train=True, device=ray.train.torch.get_device())
        return cls(in_tune=_in_tune_session(), device=local_device(use_gpu))


def local_device(use_gpu: bool):
    """The in-process device: the current CUDA device when use_gpu, else the CPU."""
    import torch

    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("distributed.use_gpu=true but torch sees no CUDA device "
                           f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                           "set distributed.use_gpu=false to train on the CPU")
    return torch.device("cuda", torch.cuda.current_device())


def _in_tune_session() -> bool:
    if "ray" not in sys.modules:  # Ray never imported: certainly not inside a Tune trial
        return False
    try:
        from ray.tune.trainable.trainable_fn_utils import _in_tune_session as in_tune

        return bool(in_tune())
    except Exception:  # noqa: BLE001 - a Ray without that hook: behave as outside Tune
        return False


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def all_reduce(values: list[float], op: str, ctx: WorkerContext) -> list[float]:
    if ctx.world_size == 1:
        return values
    import torch
    import torch.distributed as dist

    device = ctx.device if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.cpu().tolist()


def device_type(device) -> str:
    return getattr(device, "type", None) or str(device).split(":")[0]


def reset_peak_memory(device) -> None:
    import torch

    if device_type(device) == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device) -> dict:
    """Peak memory of this worker: CUDA's max allocated bytes since the last reset, or on the CPU
    the process's peak resident set (it includes everything the process ever held, not only
    training, and is never reset)."""
    import torch

    if device_type(device) == "cuda":
        torch.cuda.synchronize(device)
        return {"bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "cuda_max_memory_allocated",
                "reserved_bytes": int(torch.cuda.max_memory_reserved(device))}
    try:
        import resource
    except ImportError:  # not POSIX
        return {"bytes": None, "kind": None, "note": "no CUDA device and no `resource` module to read peak RSS"}
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux (bytes on macOS)
    factor = 1 if sys.platform == "darwin" else 1024
    return {"bytes": int(kib * factor), "kind": "process_peak_rss",
            "note": "CPU: the whole process's peak resident set since it started, not training alone"}
