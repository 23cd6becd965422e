"""The per-worker training loop: setup and the step loop, one implementation for in-process runs
and Ray Train workers.

`train_loop_per_worker(config)` is what Ray Train's TorchTrainer runs on every worker, and what
`fit` calls directly when `distributed.num_workers == 0`. The pieces around the loop live in their
own modules, along Ray Train's lines:

* `context.py`: where it runs (`WorkerContext`: rank, world size, device; in-process that is one
  CUDA device with `distributed.use_gpu=true`, else the CPU), peak memory;
* `engines.py`: plain torch (bf16 autocast where enabled), DDP, DeepSpeed ZeRO, and the DeepSpeed
  config with its "auto" values filled;
* `schedule.py`: the LR schedule (transformers' `get_scheduler`);
* `checkpoint.py`: checkpoint I/O, resume, and the report target (Ray Train, Tune, local folder).

A NaN or infinite loss term, total loss or gradient norm stops the run with `NonFiniteLossError`
before the epoch's checkpoint is written, so a diverged run never exports an adapter.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from emoloom.train import checkpoint as ckpt
from emoloom.train.checkpoint import STATE_FILE, local_checkpoints  # noqa: F401 - public names
from emoloom.train.config import TrainConfig
from emoloom.train.context import WorkerContext, all_reduce, peak_memory, reset_peak_memory, to_device
from emoloom.train.engines import (RESOURCES, DDPEngine, DeepSpeedEngine, PlainEngine,  # noqa: F401
                                   deepspeed_config, make_engine)

__all__ = ["NonFiniteLossError", "Trainer", "WorkerContext", "check_finite", "local_checkpoints",
           "train_loop_per_worker"]


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


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def base_spec(cfg: TrainConfig):
    """The candidate's ModelSpec with `auto` dtype resolved to the precision the loop computes in,
    so the frozen base weights are not recast by autocast at every step."""
    if cfg.model.dtype != "auto":
        return cfg.model
    return cfg.model.model_copy(update={"dtype": "bfloat16" if cfg.use_bf16() else "float32"})


def build_lm(cfg: TrainConfig):
    """(peft model, tokenizer, Loaded) for the candidate, LoRA attached (its init seeded by cfg.seed)."""
    from peft import LoraConfig, get_peft_model

    from emoloom.models import load_base, lora_targets

    loaded = load_base(base_spec(cfg))
    # seeded after loading: building a built-in model on a cold cache draws from the global RNG
    _seed_everything(cfg.seed)
    targets = cfg.lora.target_modules or lora_targets(loaded.info["model_type"])
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=targets, modules_to_save=cfg.modules_to_save() or None, task_type="CAUSAL_LM")
    model = get_peft_model(loaded.model, lora)
    model.train()
    return model, loaded.tokenizer, loaded


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
        self.dev_batches = [to_device(collate(dev[i:i + b], self.pad_id, self.n_labels_max), ctx.device)
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

        from emoloom.train.schedule import build_scheduler

        cfg, ctx = self.cfg, self.ctx
        model = self.model.to(ctx.device)
        lm_params = [p for p in model.lm.parameters() if p.requires_grad]
        head_params = list(model.heads.parameters())
        lr = cfg.lr()
        groups = [{"params": lm_params, "lr": lr}, {"params": head_params, "lr": cfg.optim.head_lr or lr}]
        optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.optim.weight_decay)
        self.client_optimizer = optimizer
        # on the client optimizer before any state is loaded: its base rates are the config's
        self.scheduler = build_scheduler(cfg, optimizer, self.total_steps)
        return make_engine(model, optimizer, cfg, ctx)

    # -- checkpoints ----------------------------------------------------------------------------

    def load_weights(self, folder: Path) -> None:
        self.state = ckpt.load_weights(folder, self.model, self.cfg.run_hash())

    def load_rank_state(self, folder: Path) -> None:
        ckpt.load_rank_state(folder, self.ctx.rank, self.sampler, self.state["step"], self.cfg.optim.grad_accum)

    def save_checkpoint(self, folder: Path, engine) -> None:
        ckpt.save_checkpoint(folder, model=self.model, engine=engine, scheduler=self.scheduler, sampler=self.sampler,
                             ctx=self.ctx, metrics=self.metrics_json(), state=self.state)

    def metrics_json(self) -> dict:
        s = self.state
        return {
            "loss_terms": s["history"]["terms"], "loss": s["history"]["loss"], "lr": s["history"]["lr"],
            "epochs": s["reports"], "epochs_done": s["epoch"], "steps": s["step"], "total_steps": self.total_steps,
            "tokens_per_s": s["reports"][-1]["tokens_per_s"] if s["reports"] else None,
            "tokens_per_s_worker": s["reports"][-1]["tokens_per_s_worker"] if s["reports"] else None,
            "startup_s": s.get("startup_s"), "worker_setup_s": s.get("worker_setup_s"),
            "world_size": self.ctx.world_size,
            # this worker's (rank 0's) peak over the run so far: CUDA allocator or process RSS
            "peak_memory": s.get("peak_memory"),
            "peak_memory_bytes": (s.get("peak_memory") or {}).get("bytes"),
            "device": str(self.ctx.device), "precision": self.precision,
            "engine": self.engine_kind, "data": self.data_stats, "run_hash": self.cfg.run_hash(),
            "note": "loss, loss_terms and lr are rank 0's values per optimizer step",
        }

    def call_epoch_hook(self, engine, epoch: int, metrics: dict) -> dict:
        """Run the caller's `epoch_hook(epoch, model, tokenizer, metrics) -> dict | None` on rank 0.

        Its result is merged into the epoch's report (the screen adds a decoded-dev objective for
        ASHA). A fresh run also calls it once with epoch 0 and empty metrics before its first step
        (the screen's zero-shot rung: LoRA starts as the identity, so the model is the base model);
        that result is not reported. Under ZeRO-3 every rank gathers the full parameters around it
        (collective).
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
        ckpt.publish(self.cfg, self.ctx, epoch, metrics, lambda folder: self.save_checkpoint(folder, engine))

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        self.setup()
        self.state = {"run_hash": cfg.run_hash(), "step": 0, "epoch": 0, "reports": [],
                      "history": {"loss": [], "lr": [], "terms": {t: [] for t in self.model.enabled()}}}
        if not cfg.resume and not ctx.ray_train and ctx.rank == 0:
            shutil.rmtree(Path(cfg.out) / "checkpoints", ignore_errors=True)
        with ckpt.resume_dir(cfg, ctx) as folder:
            if folder is not None:
                self.load_weights(folder)
            engine = self.make_engine()
            self.engine_kind = engine.kind
            self.precision = engine.precision
            if folder is not None:
                engine.load_state(folder, ctx)
                ckpt.load_scheduler(folder, self.scheduler, self.state["step"])
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
        sync = None
        if getattr(ctx.device, "type", None) == "cuda":
            import torch

            sync = torch.cuda.synchronize
        reset_peak_memory(ctx.device)
        if st["step"] == 0:  # a fresh run: the hook sees the model before any step (nothing is reported)
            self.call_epoch_hook(engine, 0, {})
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
                lr = self.scheduler.get_last_lr()[0]  # the LM group's rate for this step
                t0 = time.perf_counter()
                sums: dict[str, float] = {}
                total = 0.0
                for micro in range(accum):
                    boundary = micro == accum - 1
                    draws = self.sampler.draw(b)
                    batch = self._collate([pools[p][i] for p, i in draws], self.pad_id, self.n_labels_max)
                    tokens += batch["n_tokens"]
                    out = engine(to_device(batch, ctx.device))
                    engine.backward(out["loss"], boundary)
                    grad_norm = engine.step(boundary)
                    self.sampler.observe(out["pred_keys"])
                    loss_value = float(out["loss"].detach())
                    term_values = {t: float(v) for t, v in out["terms"].items()}
                    check_finite(st["step"] + 1, lr, loss_value, term_values, grad_norm)
                    total += loss_value / accum
                    for t, v in term_values.items():
                        sums[t] = sums.get(t, 0.0) + v / accum
                self.scheduler.step()
                if sync is not None:
                    sync()  # queued GPU work belongs to this step's time
                train_s += time.perf_counter() - t0
                st["step"] += 1
                hist["loss"].append(round(total, 6))
                hist["lr"].append(lr)
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
            reduced = all_reduce([means[k] for k in keys] + [float(tokens), tokens / max(train_s, 1e-9)], "sum", ctx)
            means = {k: v / ctx.world_size for k, v in zip(keys, reduced)}
            agg_tokens, sum_worker_tps = reduced[-2], reduced[-1]
            max_train_s = all_reduce([train_s], "max", ctx)[0]
            peak = peak_memory(ctx.device)
            if peak.get("bytes") is not None:  # CUDA's counter is reset per run, not per epoch: keep the max
                old = (st.get("peak_memory") or {}).get("bytes") or 0
                peak["bytes"] = max(peak["bytes"], old)
            st["peak_memory"] = peak
            metrics = {
                "epoch": epoch + 1, "step": st["step"], **means,
                **dev_metrics_safe(engine, self.dev_batches),
                "tokens_per_s": agg_tokens / max(max_train_s, 1e-9),  # all workers together
                "tokens_per_s_worker": sum_worker_tps / ctx.world_size,  # mean over workers
                "train_s": max_train_s, "startup_s": st.get("startup_s"),
                "temperature": self.sampler.effective_temperature(), "lr": hist["lr"][-1],
                "world_size": ctx.world_size, "peak_memory_bytes": peak.get("bytes"),
            }
            metrics.update(self.call_epoch_hook(engine, epoch + 1, metrics))
            st["epoch"] = epoch + 1
            st["reports"].append(metrics)
            self.say("epoch {epoch}: {m}".format(epoch=epoch + 1, m=", ".join(
                f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))))
            self.report(metrics, engine, epoch + 1)


def dev_metrics_safe(engine, batches) -> dict:
    from emoloom.train.model import dev_metrics

    if not batches:
        return {}
    with engine.autocast():
        return dev_metrics(engine.inner, batches)


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
    ctx = WorkerContext.detect(bool(runtime.get("ray_train")), use_gpu=cfg.distributed.use_gpu)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.distributed.torch_threads or cfg.distributed.cpus_per_worker)
    try:
        return Trainer(cfg, ctx, runtime).run()
    finally:
        torch.set_num_threads(threads)  # in-process: leave the caller's setting as it was
