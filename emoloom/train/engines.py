"""Optimisation back ends of the loop: plain torch (one process, CPU or one GPU), DDP, DeepSpeed ZeRO.

Each engine wraps the EmoModel and the client AdamW and offers the same calls: `engine(batch)`,
`backward(loss, boundary)`, `step(boundary)` (returns the gradient norm at accumulation boundaries),
`autocast()`, `gathered()`, `save_state` / `load_state`.

Precision: plain and DDP keep trainable weights (LoRA, heads) in fp32 and run forward and loss
under bf16 autocast when `TrainConfig.use_bf16()` (`models.auto_bf16`: a GPU with bf16, a model
of 20M+ parameters on a CPU with AMX/AVX512-BF16, or `distributed.bf16=true`); the frozen base
weights are then loaded in bf16 (`loop.build_lm`), so autocast does not recast them every step.
DeepSpeed handles bf16 itself (its config's bf16.enabled).

DeepSpeed's "auto" values are filled here from our config (`deepspeed_config`). transformers'
integration does not fit: `HfTrainerDeepSpeedConfig.trainer_config_process(args)` reads 15
`TrainingArguments` fields (adam betas and epsilon, fp16, learning rate, warmup, ...) and
`trainer_config_finalize(args, model, num_training_steps)` the model and step count (checked
against transformers 5.24); this loop has no TrainingArguments, and faking one is longer than the
table below.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

from emoloom.train.config import TrainConfig
from emoloom.train.context import WorkerContext, device_type

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "deepspeed"


class PlainEngine:
    """One process, plain torch: gradient accumulation and clipping by hand."""

    kind = "plain"

    def __init__(self, module, optimizer, cfg: TrainConfig, ctx: WorkerContext | None = None):
        self.inner = module
        self.wrapped = module
        self.optimizer = optimizer
        self.accum = cfg.optim.grad_accum
        self.max_grad_norm = cfg.optim.max_grad_norm
        self._params = [p for p in module.parameters() if p.requires_grad]
        self.bf16 = cfg.use_bf16()
        self.device_type = device_type(ctx.device) if ctx is not None else "cpu"

    @property
    def precision(self) -> str:
        return "bf16-autocast" if self.bf16 else "fp32"

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)

    def __call__(self, batch: dict) -> dict:
        with self.autocast():
            return self.wrapped(batch)

    def backward(self, loss, boundary: bool) -> None:
        (loss / self.accum).backward()

    def step(self, boundary: bool):
        """Optimizer step at accumulation boundaries; returns the total gradient norm (a tensor,
        not synced here) when clipping computed one, else None."""
        if not boundary:
            return None
        norm = None
        if self.max_grad_norm > 0:
            import torch

            norm = torch.nn.utils.clip_grad_norm_(self._params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def gathered(self):
        return contextlib.nullcontext()

    def save_state(self, folder: Path, ctx: WorkerContext) -> None:
        import torch

        if ctx.rank == 0:  # replicated optimizer: one copy is enough
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")

    def load_state(self, folder: Path, ctx: WorkerContext) -> None:
        import torch

        path = folder / "optimizer.pt"
        if path.exists():
            self.optimizer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


class DDPEngine(PlainEngine):
    kind = "ddp"

    def __init__(self, module, optimizer, cfg: TrainConfig, ctx: WorkerContext):
        super().__init__(module, optimizer, cfg, ctx)
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.device] if device_type(ctx.device) == "cuda" else None
        # unused parameters are normal here: the emotion heads of taxonomies absent from a batch
        self.wrapped = DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)

    def backward(self, loss, boundary: bool) -> None:
        sync = contextlib.nullcontext() if boundary else self.wrapped.no_sync()
        with sync:
            (loss / self.accum).backward()


class DeepSpeedEngine:
    """DeepSpeed ZeRO-2/3 with a torch AdamW client optimizer (no JIT-compiled op is needed)."""

    kind = "deepspeed"

    def __init__(self, module, optimizer, cfg: TrainConfig, ctx: WorkerContext):
        import deepspeed
        import deepspeed.ops
        from deepspeed.utils import logger as ds_logger

        ds_logger.setLevel("WARNING")
        # stack.md trap 1: without this, initialize JIT-compiles a C++ shared-memory comm op on CPU
        # (48-121 s). A private hook of deepspeed 0.19.8 (pinned); tests assert no op gets built.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        self.zero_stage = cfg.distributed.zero_stage
        self.precision = "bf16" if cfg.use_bf16() else "fp32"
        ds_config = deepspeed_config(cfg, ctx.world_size, hidden_size=_hidden_size(module))
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, config=ds_config)
        self.inner = self.engine.module
        self.client_optimizer = optimizer

    def autocast(self):
        return contextlib.nullcontext()  # the engine casts the module itself

    def __call__(self, batch: dict) -> dict:
        return self.engine(batch)

    def backward(self, loss, boundary: bool) -> None:
        self.engine.backward(loss)  # scales by 1 / gradient_accumulation_steps itself

    def step(self, boundary: bool):
        self.engine.step()  # steps the optimizer only at accumulation boundaries
        # ZeRO computes the global norm at every boundary step (inf when it skipped an overflow)
        return self.engine.get_global_grad_norm() if boundary else None

    def gathered(self):
        if self.zero_stage == 3:
            import deepspeed

            params = [p for p in self.inner.parameters() if p.requires_grad]
            return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        return contextlib.nullcontext()

    def save_state(self, folder: Path, ctx: WorkerContext) -> None:
        # collective: every rank writes its optimizer partition; trainable module state only
        self.engine.save_checkpoint(str(folder / "deepspeed"), tag="state", save_latest=False,
                                    exclude_frozen_parameters=True)

    def load_state(self, folder: Path, ctx: WorkerContext) -> None:
        if (folder / "deepspeed" / "state").is_dir():
            self.engine.load_checkpoint(str(folder / "deepspeed"), tag="state", load_module_strict=False,
                                        load_optimizer_states=True, load_lr_scheduler_states=False)


def make_engine(module, optimizer, cfg: TrainConfig, ctx: WorkerContext):
    """Plain torch in-process (CPU or one GPU) and for a single Ray worker without DeepSpeed;
    DeepSpeed or DDP for Ray Train workers."""
    if ctx.world_size == 1 and not ctx.ray_train:
        return PlainEngine(module, optimizer, cfg, ctx)
    if cfg.distributed.strategy == "deepspeed":
        return DeepSpeedEngine(module, optimizer, cfg, ctx)
    if ctx.world_size == 1:
        return PlainEngine(module, optimizer, cfg, ctx)
    return DDPEngine(module, optimizer, cfg, ctx)


def _hidden_size(module) -> int:
    return int(module.heads.hidden_size)


def deepspeed_config(cfg: TrainConfig, world_size: int, hidden_size: int) -> dict:
    """The repo's zero{2,3}.json (or distributed.deepspeed_config) with every "auto" filled in."""
    path = Path(cfg.distributed.deepspeed_config or RESOURCES / f"zero{cfg.distributed.zero_stage}.json")
    raw = json.loads(path.read_text())
    for section in ("optimizer", "scheduler"):
        if section in raw:
            # stack.md trap 2: a DeepSpeed "optimizer" JIT-compiles fused_adam (~200 s); the loop
            # passes a torch AdamW and sets the learning rate itself.
            raise ValueError(f"{path}: remove the {section!r} section; the training loop supplies it")
    b, accum = cfg.optim.batch_size, cfg.optim.grad_accum
    values = {
        "train_micro_batch_size_per_gpu": b,
        "gradient_accumulation_steps": accum,
        "train_batch_size": b * accum * world_size,
        "gradient_clipping": cfg.optim.max_grad_norm,
        "bf16.enabled": cfg.use_bf16(),
        "fp16.enabled": False,
        "zero_optimization.stage": cfg.distributed.zero_stage,
        "zero_optimization.reduce_bucket_size": hidden_size * hidden_size,
        "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "zero_optimization.stage3_param_persistence_threshold": 10 * hidden_size,
    }
    missing: list[str] = []

    def fill(node: dict, prefix: str) -> None:
        for key, value in node.items():
            name = prefix + key
            if isinstance(value, dict):
                fill(value, name + ".")
            elif value == "auto":
                if name in values:
                    node[key] = values[name]
                else:
                    missing.append(name)

    fill(raw, "")
    if missing:
        raise ValueError(f"{path}: no value for 'auto' keys {missing}")
    return raw
