"""Checkpoint I/O of the loop and where a finished epoch goes (the report target).

A checkpoint folder holds the LoRA adapter (peft `save_pretrained`: adapter weights and any
`modules_to_save` copies), `heads.pt`, the optimizer state (`optimizer.pt`, or DeepSpeed's
partitions under `deepspeed/`), the LR scheduler state (`scheduler.pt`), every rank's sampler and
RNG state (`rank<N>.pt`), `metrics.json`, and `trainer_state.json`, written last: it marks the
folder complete. Never the frozen base model.

Report targets: a Ray Train worker reports a scratch folder to `ray.train.report` (Ray merges the
ranks' folders); in-process runs write `<out>/checkpoints/epoch_NNNN` (atomically, by rename) and,
inside a Ray Tune trial, also report it to `ray.tune.report`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from emoloom.train.config import TrainConfig
from emoloom.train.context import WorkerContext

STATE_FILE = "trainer_state.json"
SCHEDULER_FILE = "scheduler.pt"


def local_checkpoints(out: str | Path) -> list[Path]:
    """Complete in-process checkpoints of a run folder, oldest first."""
    folder = Path(out) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("epoch_*") if (p / STATE_FILE).exists())


@contextlib.contextmanager
def resume_dir(cfg: TrainConfig, ctx: WorkerContext) -> Iterator[Path | None]:
    """The checkpoint folder to resume from (Ray Train's, Tune's, else the newest local one), or None."""
    if not cfg.resume:
        yield None
        return
    checkpoint = None
    if ctx.ray_train:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
    elif ctx.in_tune:
        import ray.tune

        checkpoint = ray.tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            yield Path(folder)
        return
    found = local_checkpoints(cfg.out) if not ctx.ray_train else []
    yield found[-1] if found else None


def load_weights(folder: Path, model, run_hash: str) -> dict:
    """Load the adapter and heads of `folder` into the EmoModel; returns the trainer state."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((folder / STATE_FILE).read_text())
    if state["run_hash"] != run_hash:
        raise ValueError(
            f"{folder} holds a checkpoint of a different config (run hash {state['run_hash']}, this run "
            f"{run_hash}); train into another out= folder or pass resume=false")
    set_peft_model_state_dict(model.lm, load_file(folder / "adapter" / "adapter_model.safetensors"))
    heads = torch.load(folder / "heads.pt", map_location="cpu", weights_only=True)
    model.heads.load_state_dict(heads["state_dict"])
    return state


def load_rank_state(folder: Path, rank: int, sampler, step: int, grad_accum: int) -> None:
    import torch

    path = folder / f"rank{rank}.pt"
    if path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        sampler.load_state_dict(blob["sampler"])
        torch.set_rng_state(blob["torch_rng"])
    else:  # a different world size than the checkpoint's: keep the schedule's position
        sampler.step = step * grad_accum


def load_scheduler(folder: Path, scheduler, step: int) -> None:
    """Restore the LR scheduler; a checkpoint from before schedulers were saved: fast-forward it."""
    import torch

    path = folder / SCHEDULER_FILE
    if path.exists():
        scheduler.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        for _ in range(step):
            scheduler.step()


def save_checkpoint(folder: Path, *, model, engine, scheduler, sampler, ctx: WorkerContext,
                    metrics: dict, state: dict) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    with engine.gathered():  # ZeRO-3: whole trainable tensors on every rank while saving
        if ctx.rank == 0:
            model.lm.save_pretrained(str(folder / "adapter"))
            model.heads.save(folder / "heads.pt")
    engine.save_state(folder, ctx)
    torch.save({"sampler": sampler.state_dict(), "torch_rng": torch.get_rng_state()}, folder / f"rank{ctx.rank}.pt")
    if ctx.rank == 0:
        torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)  # identical on every rank
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
        (folder / STATE_FILE).write_text(json.dumps(state))  # written last: marks it complete


def publish(cfg: TrainConfig, ctx: WorkerContext, epoch: int, metrics: dict, save: Callable[[Path], None]) -> None:
    """Save the epoch's checkpoint with `save(folder)` and hand it to where this run reports."""
    name = f"epoch_{epoch:04d}"
    if ctx.ray_train:
        import ray.train

        # one fixed scratch folder per run and rank: a worker killed mid-save (another rank
        # failed) leaves at most this folder behind, and its restart clears it
        run_id = hashlib.sha256(f"{cfg.run_hash()} {cfg.out}".encode()).hexdigest()[:16]
        tmp = Path(tempfile.gettempdir()) / f"emoloom-ckpt-{run_id}-r{ctx.rank}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            save(tmp)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)),
                             checkpoint_dir_name=name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    root = Path(cfg.out) / "checkpoints"
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in local_checkpoints(cfg.out)[:-cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    if ctx.in_tune:
        import ray.tune

        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(str(final)))
