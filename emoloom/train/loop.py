"""The per-worker training loop: one implementation for in-process runs and Ray Train workers.

`train_loop_per_worker(config)` is what Ray Train's TorchTrainer runs on every worker, and what
`fit` calls directly when `distributed.num_workers == 0`. The only differences between the two
live in `WorkerContext` (rank, world size, device, where checkpoints come from and go to):

* Ray Train worker: rank/world from `ray.train.get_context()`; resume from
  `ray.train.get_checkpoint()`; every epoch `ray.train.report(metrics, checkpoint=...)` from every
  rank (Ray merges the ranks' folders; rank 0 writes the adapter and heads, every rank its
  sampler/RNG state and, under DeepSpeed, its optimizer shard).
* in-process: one rank, plain torch (no DeepSpeed, no process group); checkpoints go to
  `<out>/checkpoints/epoch_NNNN` and resume comes from the newest one there. Inside a Ray Tune
  trial (the screen may run cheap CPU trials without Ray Train) the epoch reports and
  checkpoints also go to `ray.tune.report`, and resume prefers `ray.tune.get_checkpoint()`.

Checkpoints hold the LoRA adapter (peft `save_pretrained`: adapter weights and any
`modules_to_save` copies), the heads, the optimizer state and the sampler/RNG state; never the
frozen base model (DeepSpeed saves with `exclude_frozen_parameters=True`).

A NaN or infinite loss term, total loss or gradient norm stops the run with `NonFiniteLossError`
before the epoch's checkpoint is written, so a diverged run never exports an adapter.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from emoloom.train.config import TrainConfig

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "deepspeed"
STATE_FILE = "trainer_state.json"


class NonFiniteLossError(RuntimeError):
    """Training diverged: a loss term, the total loss or the gradient norm is NaN or infinite."""


def check_finite(step: int, lr: float, loss: float, terms: dict[str, float], grad_norm: Any = None) -> None:
    """Raise NonFiniteLossError naming the step (1-based, as logged) and what went non-finite.

    Free per step: `loss` and `terms` are the Python floats the loop logs anyway (the host sync
    is already there), and `grad_norm` is the total norm the engine computed for clipping (None
    when it computes none: no clipping; poisoned weights then show as a loss term a step later).
    """
    for name, value in terms.items():
        if not math.isfinite(value):
            raise NonFiniteLossError(f"step {step}: loss term {name!r} is {value} (lr {lr:.3g})")
    if not math.isfinite(loss):  # finite terms, weighted sum overflowed
        raise NonFiniteLossError(f"step {step}: loss is {loss} (lr {lr:.3g})")
    if grad_norm is not None and not math.isfinite(norm := float(grad_norm)):
        raise NonFiniteLossError(f"step {step}: gradient norm is {norm} (every loss term finite; lr {lr:.3g})")


# -----------------------------------------------------------------------------------------------
# Where the loop runs
# -----------------------------------------------------------------------------------------------


@dataclass
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    ray_train: bool = False
    in_tune: bool = False
    device: Any = "cpu"

    @classmethod
    def detect(cls, ray_train: bool) -> "WorkerContext":
        if ray_train:
            import ray.train
            import ray.train.torch

            c = ray.train.get_context()
            return cls(rank=c.get_world_rank(), world_size=c.get_world_size(), local_rank=c.get_local_rank(),
                       ray_train=True, device=ray.train.torch.get_device())
        return cls(in_tune=_in_tune_session())


def _in_tune_session() -> bool:
    if "ray" not in sys.modules:  # Ray never imported: certainly not inside a Tune trial
        return False
    try:
        from ray.tune.trainable.trainable_fn_utils import _in_tune_session as in_tune

        return bool(in_tune())
    except Exception:  # noqa: BLE001 - a Ray without that hook: behave as outside Tune
        return False


# -----------------------------------------------------------------------------------------------
# Optimisation back ends: plain torch, DDP, DeepSpeed ZeRO
# -----------------------------------------------------------------------------------------------


class PlainEngine:
    """One process, plain torch: gradient accumulation and clipping by hand."""

    kind = "plain"

    def __init__(self, module, optimizer, cfg: TrainConfig):
        self.inner = module
        self.wrapped = module
        self.optimizer = optimizer
        self.accum = cfg.optim.grad_accum
        self.max_grad_norm = cfg.optim.max_grad_norm
        self._params = [p for p in module.parameters() if p.requires_grad]

    def __call__(self, batch: dict) -> dict:
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
        super().__init__(module, optimizer, cfg)
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.device] if getattr(ctx.device, "type", "cpu") == "cuda" else None
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
        ds_config = deepspeed_config(cfg, ctx.world_size, hidden_size=_hidden_size(module))
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, config=ds_config)
        self.inner = self.engine.module
        self.client_optimizer = optimizer

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


# -----------------------------------------------------------------------------------------------
# Setup helpers
# -----------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_lm(cfg: TrainConfig):
    """(peft model, tokenizer, Loaded) for the candidate, LoRA attached (its init seeded by cfg.seed)."""
    from peft import LoraConfig, get_peft_model

    from emoloom.models import load_base, lora_targets

    loaded = load_base(cfg.model)
    # seeded after loading: building a built-in model on a cold cache draws from the global RNG
    _seed_everything(cfg.seed)
    targets = cfg.lora.target_modules or lora_targets(loaded.info["model_type"])
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=targets, modules_to_save=cfg.modules_to_save() or None, task_type="CAUSAL_LM")
    model = get_peft_model(loaded.model, lora)
    model.train()
    return model, loaded.tokenizer, loaded


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warmup, then constant / linear / cosine decay to min_lr_ratio."""
    o = cfg.optim
    if o.warmup_steps and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return 1.0
    u = (step - o.warmup_steps) / max(1, total - o.warmup_steps - 1)
    u = min(1.0, max(0.0, u))
    shape = 1.0 - u if o.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * u))
    return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * shape


def _to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def _all_reduce(values: list[float], op: str, ctx: WorkerContext) -> list[float]:
    if ctx.world_size == 1:
        return values
    import torch
    import torch.distributed as dist

    device = ctx.device if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.cpu().tolist()


# -----------------------------------------------------------------------------------------------
# Checkpoints
# -----------------------------------------------------------------------------------------------


def local_checkpoints(out: str | Path) -> list[Path]:
    """Complete in-process checkpoints of a run folder, oldest first."""
    folder = Path(out) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("epoch_*") if (p / STATE_FILE).exists())


@contextlib.contextmanager
def _resume_dir(cfg: TrainConfig, ctx: WorkerContext) -> Iterator[Path | None]:
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


class Trainer:
    def __init__(self, cfg: TrainConfig, ctx: WorkerContext, runtime: dict):
        self.cfg, self.ctx, self.runtime = cfg, ctx, runtime
        self.t_submit = float(runtime.get("t_submit", time.time()))

    def say(self, msg: str) -> None:
        if self.ctx.rank == 0:
            print(f"[emoloom.train] {msg}", flush=True)

    # -- setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        import torch

        from emoloom.labels import taxonomy as labels_of
        from emoloom.lexicon import load_lexicon
        from emoloom.sampling import MixtureSampler
        from emoloom.train.examples import collate, encode, prepare_data
        from emoloom.train.heads import EmoHeads
        from emoloom.train.losses import token_vad_table
        from emoloom.train.model import EmoModel

        cfg, ctx = self.cfg, self.ctx
        lm, tok, loaded = build_lm(cfg)  # seeds the LoRA init: identical on every rank
        self.tokenizer, self.loaded = tok, loaded
        prepared = prepare_data(cfg)
        self.prepared = prepared
        lexicon = load_lexicon(cfg.data.lexicon)
        vocab = lm.get_output_embeddings().weight.shape[0]
        lex_ids, lex_vad = token_vad_table(tok, lexicon, vocab)
        hidden = lm.config.hidden_size
        torch.manual_seed(cfg.seed)  # head init independent of what prepare_data did (cold or warm cache)
        heads = EmoHeads(hidden, prepared.taxonomies)
        self.model = EmoModel(lm, heads, cfg.loss, lex_ids, lex_vad)

        self.pools = {}
        dropped = 0
        for name, records in (("A", prepared.pool_a), ("B", prepared.pool_b)):
            self.pools[name], d = encode(records, tok, prepared, cfg.data.max_length)
            dropped += d
        dev, d_dev = encode(prepared.dev, tok, prepared, cfg.data.max_length)
        self.n_labels_max = max(len(labels_of(t)) for t in prepared.taxonomies)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        b = cfg.optim.batch_size
        self.dev_batches = [_to_device(collate(dev[i:i + b], self.pad_id, self.n_labels_max), ctx.device)
                            for i in range(0, len(dev), b)]
        self._collate = collate
        n_train = len(self.pools["A"]) + len(self.pools["B"])
        if n_train == 0:
            raise ValueError("no training examples (all sources empty, unlabelled or longer than data.max_length)")
        per_step = b * cfg.optim.grad_accum * ctx.world_size
        self.steps_per_epoch = cfg.steps_per_epoch or max(1, math.ceil(n_train / per_step))
        # max_steps, when set, overrides epochs (as in HF Trainer); the last epoch may be partial
        self.total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * self.steps_per_epoch
        self.n_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.sampler = MixtureSampler.from_config(
            [e.key for e in self.pools["A"]], [e.key for e in self.pools["B"]], cfg.sampling,
            total_steps=self.total_steps * cfg.optim.grad_accum, seed=cfg.seed, rank=ctx.rank)
        self.data_stats = {**prepared.stats, "too_long_dropped": dropped + d_dev, "train_examples": n_train,
                           "dev_examples": len(dev), "lexicon_tokens": int(lex_ids.numel())}
        self.say(f"model {cfg.model.name} ({loaded.info['parameters']:,} base parameters), "
                 f"trainable {sum(p.numel() for p in self.model.parameters() if p.requires_grad):,}; "
                 f"pool A {len(self.pools['A'])}, pool B {len(self.pools['B'])}, dev {len(dev)}; "
                 f"{self.total_steps} steps in {self.n_epochs} epoch(s); world {ctx.world_size}")
        # dropout differs per rank from here on; the init above was identical everywhere
        torch.manual_seed(cfg.seed * 1009 + ctx.rank)

    def make_engine(self):
        import torch

        cfg, ctx = self.cfg, self.ctx
        model = self.model.to(ctx.device)
        lm_params = [p for p in model.lm.parameters() if p.requires_grad]
        head_params = list(model.heads.parameters())
        lr = cfg.lr()
        groups = [{"params": lm_params, "lr": lr}, {"params": head_params, "lr": cfg.optim.head_lr or lr}]
        self.base_lrs = [g["lr"] for g in groups]
        optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.optim.weight_decay)
        self.client_optimizer = optimizer
        if ctx.world_size == 1 and not ctx.ray_train:
            return PlainEngine(model, optimizer, cfg)
        if cfg.distributed.strategy == "deepspeed":
            return DeepSpeedEngine(model, optimizer, cfg, ctx)
        if ctx.world_size == 1:
            return PlainEngine(model, optimizer, cfg)
        return DDPEngine(model, optimizer, cfg, ctx)

    # -- checkpoints ----------------------------------------------------------------------------

    def load_weights(self, folder: Path) -> None:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = json.loads((folder / STATE_FILE).read_text())
        if state["run_hash"] != self.cfg.run_hash():
            raise ValueError(
                f"{folder} holds a checkpoint of a different config (run hash {state['run_hash']}, this run "
                f"{self.cfg.run_hash()}); train into another out= folder or pass resume=false")
        set_peft_model_state_dict(self.model.lm, load_file(folder / "adapter" / "adapter_model.safetensors"))
        heads = torch.load(folder / "heads.pt", map_location="cpu", weights_only=True)
        self.model.heads.load_state_dict(heads["state_dict"])
        self.state = state

    def load_rank_state(self, folder: Path) -> None:
        import torch

        path = folder / f"rank{self.ctx.rank}.pt"
        if path.exists():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            self.sampler.load_state_dict(blob["sampler"])
            torch.set_rng_state(blob["torch_rng"])
        else:  # a different world size than the checkpoint's: keep the schedule's position
            self.sampler.step = self.state["step"] * self.cfg.optim.grad_accum

    def save_checkpoint(self, folder: Path, engine) -> None:
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        with engine.gathered():  # ZeRO-3: whole trainable tensors on every rank while saving
            if self.ctx.rank == 0:
                self.model.lm.save_pretrained(str(folder / "adapter"))
                self.model.heads.save(folder / "heads.pt")
        engine.save_state(folder, self.ctx)
        torch.save({"sampler": self.sampler.state_dict(), "torch_rng": torch.get_rng_state()},
                   folder / f"rank{self.ctx.rank}.pt")
        if self.ctx.rank == 0:
            (folder / "metrics.json").write_text(json.dumps(self.metrics_json(), indent=1))
            (folder / STATE_FILE).write_text(json.dumps(self.state))  # written last: marks it complete

    def metrics_json(self) -> dict:
        s = self.state
        return {
            "loss_terms": s["history"]["terms"], "loss": s["history"]["loss"], "lr": s["history"]["lr"],
            "epochs": s["reports"], "epochs_done": s["epoch"], "steps": s["step"], "total_steps": self.total_steps,
            "tokens_per_s": s["reports"][-1]["tokens_per_s"] if s["reports"] else None,
            "tokens_per_s_worker": s["reports"][-1]["tokens_per_s_worker"] if s["reports"] else None,
            "startup_s": s.get("startup_s"), "worker_setup_s": s.get("worker_setup_s"),
            "world_size": self.ctx.world_size,
            "engine": self.engine_kind, "data": self.data_stats, "run_hash": self.cfg.run_hash(),
            "note": "loss, loss_terms and lr are rank 0's values per optimizer step",
        }

    def call_epoch_hook(self, engine, epoch: int, metrics: dict) -> dict:
        """Run the caller's `epoch_hook(epoch, model, tokenizer, metrics) -> dict | None` on rank 0.

        Its result is merged into the epoch's report (the screen adds a decoded-dev objective for
        ASHA). Under ZeRO-3 every rank gathers the full parameters around it (collective).
        """
        hook = self.runtime.get("epoch_hook")
        if hook is None:
            return {}
        gather = contextlib.nullcontext()
        if getattr(engine, "zero_stage", None) == 3:
            import deepspeed

            gather = deepspeed.zero.GatheredParameters(list(engine.inner.parameters()), modifier_rank=None)
        extra: dict = {}
        with gather:
            if self.ctx.rank == 0:
                extra = dict(hook(epoch, engine.inner.lm, self.tokenizer, dict(metrics)) or {})
        self.model.train()
        return extra

    def report(self, metrics: dict, engine, epoch: int) -> None:
        cfg, ctx = self.cfg, self.ctx
        name = f"epoch_{epoch:04d}"
        if ctx.ray_train:
            import ray.train

            # one fixed scratch folder per run and rank: a worker killed mid-save (another rank
            # failed) leaves at most this folder behind, and its restart clears it
            run_id = hashlib.sha256(f"{cfg.run_hash()} {cfg.out}".encode()).hexdigest()[:16]
            tmp = Path(tempfile.gettempdir()) / f"emoloom-ckpt-{run_id}-r{ctx.rank}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                self.save_checkpoint(tmp, engine)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)),
                                 checkpoint_dir_name=name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return
        root = Path(cfg.out) / "checkpoints"
        final = root / name
        tmp = root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.save_checkpoint(tmp, engine)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in local_checkpoints(cfg.out)[:-cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        if ctx.in_tune:
            import ray.tune

            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(str(final)))

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        self.setup()
        self.state = {"run_hash": cfg.run_hash(), "step": 0, "epoch": 0, "reports": [],
                      "history": {"loss": [], "lr": [], "terms": {t: [] for t in self.model.enabled()}}}
        if not cfg.resume and not ctx.ray_train and ctx.rank == 0:
            shutil.rmtree(Path(cfg.out) / "checkpoints", ignore_errors=True)
        with _resume_dir(cfg, ctx) as folder:
            if folder is not None:
                self.load_weights(folder)
            engine = self.make_engine()
            self.engine_kind = engine.kind
            if folder is not None:
                engine.load_state(folder, ctx)
                self.load_rank_state(folder)
                self.say(f"resumed from {folder} at step {self.state['step']}")
        self.train(engine)
        return self.metrics_json()

    def train(self, engine) -> None:
        cfg, ctx, st = self.cfg, self.ctx, self.state
        hist = st["history"]
        accum, b = cfg.optim.grad_accum, cfg.optim.batch_size
        pools = self.pools
        self.model.train()
        first_step_at = None
        for epoch in range(st["epoch"], self.n_epochs):
            end = min(self.total_steps, (epoch + 1) * self.steps_per_epoch)
            start_step = st["step"]
            tokens, train_s = 0, 0.0
            while st["step"] < end:
                if first_step_at is None:
                    first_step_at = time.time()
                    # from fit() to the first step (Ray start-up included) / from this worker's start
                    st["startup_s"] = round(first_step_at - self.t_submit, 3)
                    st["worker_setup_s"] = round(first_step_at - self.runtime.get("t_worker", first_step_at), 3)
                factor = lr_factor(cfg, st["step"], self.total_steps)
                for group, base in zip(self.client_optimizer.param_groups, self.base_lrs):
                    group["lr"] = base * factor
                t0 = time.perf_counter()
                sums: dict[str, float] = {}
                total = 0.0
                for micro in range(accum):
                    boundary = micro == accum - 1
                    draws = self.sampler.draw(b)
                    batch = self._collate([pools[p][i] for p, i in draws], self.pad_id, self.n_labels_max)
                    tokens += batch["n_tokens"]
                    out = engine(_to_device(batch, ctx.device))
                    engine.backward(out["loss"], boundary)
                    grad_norm = engine.step(boundary)
                    self.sampler.observe(out["pred_keys"])
                    loss_value = float(out["loss"].detach())
                    term_values = {t: float(v) for t, v in out["terms"].items()}
                    check_finite(st["step"] + 1, self.base_lrs[0] * factor, loss_value, term_values, grad_norm)
                    total += loss_value / accum
                    for t, v in term_values.items():
                        sums[t] = sums.get(t, 0.0) + v / accum
                train_s += time.perf_counter() - t0
                st["step"] += 1
                hist["loss"].append(round(total, 6))
                hist["lr"].append(self.base_lrs[0] * factor)
                for t in hist["terms"]:
                    hist["terms"][t].append(round(sums.get(t, 0.0), 6))
                if st["step"] % cfg.log_every == 0 or st["step"] == self.total_steps:
                    terms = " ".join(f"{t}={sums[t]:.4f}" for t in sums)
                    self.say(f"step {st['step']}/{self.total_steps} loss={total:.4f} {terms} "
                             f"T_eff={self.sampler.effective_temperature():.2f}")
            n = st["step"] - start_step
            if n == 0:
                continue
            means = {f"loss_{t}": sum(v[-n:]) / n for t, v in hist["terms"].items()}
            means["loss"] = sum(hist["loss"][-n:]) / n
            keys = sorted(means)
            reduced = _all_reduce([means[k] for k in keys] + [float(tokens), tokens / max(train_s, 1e-9)], "sum", ctx)
            means = {k: v / ctx.world_size for k, v in zip(keys, reduced)}
            agg_tokens, sum_worker_tps = reduced[-2], reduced[-1]
            max_train_s = _all_reduce([train_s], "max", ctx)[0]
            metrics = {
                "epoch": epoch + 1, "step": st["step"], **means,
                **dev_metrics_safe(engine.inner, self.dev_batches),
                "tokens_per_s": agg_tokens / max(max_train_s, 1e-9),  # all workers together
                "tokens_per_s_worker": sum_worker_tps / ctx.world_size,  # mean over workers
                "train_s": max_train_s, "startup_s": st.get("startup_s"),
                "temperature": self.sampler.effective_temperature(), "lr": hist["lr"][-1],
                "world_size": ctx.world_size,
            }
            metrics.update(self.call_epoch_hook(engine, epoch + 1, metrics))
            st["epoch"] = epoch + 1
            st["reports"].append(metrics)
            self.say("epoch {epoch}: {m}".format(epoch=epoch + 1, m=", ".join(
                f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))))
            self.report(metrics, engine, epoch + 1)


def dev_metrics_safe(model, batches) -> dict:
    from emoloom.train.model import dev_metrics

    return dev_metrics(model, batches) if batches else {}


def train_loop_per_worker(config: dict) -> dict:
    """Entry point of one worker (Ray Train) or of the in-process run.

    config: {"train": TrainConfig as a JSON dict, "runtime": {"ray_train": bool, "t_submit": float,
    "env": {name: value}, "epoch_hook": callable or None}} (what `emoloom.train.fit` passes;
    "runtime" may be left out). Returns the run's metrics (the content of metrics.json).
    """
    runtime = dict(config.get("runtime") or {})
    runtime["t_worker"] = time.time()
    for key, value in (runtime.get("env") or {}).items():
        os.environ[key] = value  # the driver's cache and offline settings reach every worker
    cfg = TrainConfig.model_validate(config["train"])
    ctx = WorkerContext.detect(bool(runtime.get("ray_train")))
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.distributed.torch_threads or cfg.distributed.cpus_per_worker)
    try:
        return Trainer(cfg, ctx, runtime).run()
    finally:
        torch.set_num_threads(threads)  # in-process: leave the caller's setting as it was
