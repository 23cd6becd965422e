"""`fit`: train one candidate, in-process (num_workers=0: the CPU, or one GPU with
distributed.use_gpu=true, no Ray or DeepSpeed needed) or with Ray Train's TorchTrainer.

Either way the same `train_loop_per_worker` runs; afterwards the newest checkpoint is exported
into the run folder:

    <out>/adapter/        peft adapter (PeftModel.from_pretrained(base, <out>/adapter))
    <out>/heads.pt        emotion / VAD / appraisal heads (emoloom.train.heads.load_heads)
    <out>/config.yaml     the resolved TrainConfig
    <out>/metrics.json    loss_terms (term -> per-step values), tokens_per_s, epochs, ...

Ray runs keep their checkpoints under `storage_path` (default `<out>/ray`) in a run named after
the config hash, so calling `fit` again with the same config resumes the interrupted run there
(Ray Train V2 restores from the run's storage); in-process runs resume from `<out>/checkpoints`.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from emoloom.config import dump_yaml
from emoloom.train.config import TrainConfig

# Settings a worker must share with the driver (Ray workers may start with another environment).
PROPAGATED_ENV = ("EMOLOOM_CACHE", "TORCH_EXTENSIONS_DIR", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                  "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM")
# hook(epoch, peft model, tokenizer, epoch metrics) -> extra metrics for the epoch's report
EpochHook = Callable[[int, Any, Any, dict], "dict | None"]


@dataclass
class TrainResult:
    out: Path  # the run folder (adapter/, heads.pt, config.yaml, metrics.json)
    metrics: dict[str, Any]  # the content of metrics.json
    checkpoint: Path | None  # the checkpoint exported (in-process folder or Ray storage folder)
    fit_s: float  # wall seconds of the whole fit, start-up included
    ray_result: Any = field(default=None, repr=False)  # ray.train.Result for Ray runs

    @property
    def adapter(self) -> Path:
        return self.out / "adapter"

    @property
    def heads(self) -> Path:
        return self.out / "heads.pt"

    def last(self, key: str, default: Any = None) -> Any:
        """The last epoch report's value of `key` (e.g. dev_head_macro_f1)."""
        epochs = self.metrics.get("epochs") or []
        return epochs[-1].get(key, default) if epochs else default


def _runtime(ray_train: bool, epoch_hook: EpochHook | None) -> dict:
    return {"ray_train": ray_train, "t_submit": time.time(), "epoch_hook": epoch_hook,
            "env": {k: os.environ[k] for k in PROPAGATED_ENV if k in os.environ}}


def fit(cfg: TrainConfig, *, callbacks: Sequence[Any] = (), storage_path: str | os.PathLike | None = None,
        epoch_hook: EpochHook | None = None) -> TrainResult:
    """Train `cfg`; see the module docstring.

    callbacks:    go to Ray Train's RunConfig (e.g. `ray.tune.integration.ray_train.TuneReportCallback()`
                  inside a Tune trial). In-process runs inside a Tune trial report to Tune themselves.
    storage_path: Ray runs' checkpoint storage (default <out>/ray).
    epoch_hook:   `hook(epoch, model, tokenizer, metrics) -> dict | None`, called on rank 0 after
                  each epoch's dev metrics with the peft model (train mode is restored afterwards);
                  the dict it returns joins that epoch's report (e.g. a decoded-dev objective for
                  ASHA). A fresh run also calls it with epoch 0 and empty metrics before the first
                  step (its result is not reported). Under Ray it is pickled to the workers.
    """
    t0 = time.time()
    cfg = cfg.absolute()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_yaml(cfg))
    if cfg.distributed.num_workers == 0:
        from emoloom.train.loop import local_checkpoints, train_loop_per_worker

        train_loop_per_worker({"train": cfg.model_dump(mode="json"), "runtime": _runtime(False, epoch_hook)})
        checkpoint = local_checkpoints(out)[-1]
        metrics = _export(checkpoint, out)
        return TrainResult(out=out, metrics=metrics, checkpoint=checkpoint, fit_s=time.time() - t0)
    _warm_caches(cfg)
    result = _fit_ray(cfg, callbacks, storage_path, epoch_hook)
    with result.checkpoint.as_directory() as folder:
        metrics = _export(Path(folder), out)
    return TrainResult(out=out, metrics=metrics, checkpoint=Path(result.checkpoint.path), fit_s=time.time() - t0,
                       ray_result=result)


def _warm_caches(cfg: TrainConfig) -> None:
    """Build the built-in model (or convert the GGUF) and the run's data once here, not concurrently
    in every worker (they share the cache folder on one machine; on other nodes workers build their own)."""
    from emoloom.models import model_path
    from emoloom.train.examples import prepare_data

    model_path(cfg.model)
    prepare_data(cfg)


def _fit_ray(cfg: TrainConfig, callbacks: Sequence[Any], storage_path, epoch_hook):
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from emoloom.train.loop import train_loop_per_worker

    if not ray.is_initialized():
        from emoloom.local_ray import init_ray

        init_ray(include_dashboard=False, log_to_driver=True)
    d = cfg.distributed
    name = f"train-{cfg.run_hash()}"
    storage = Path(storage_path).resolve() if storage_path else Path(cfg.out) / "ray"
    if not cfg.resume:
        # a fresh start: Ray Train V2 would otherwise restore this run from its storage (and
        # prune the new epoch_* checkpoints as duplicates of the old ones)
        shutil.rmtree(storage / name, ignore_errors=True)
    scaling = ScalingConfig(num_workers=d.num_workers, use_gpu=d.use_gpu,
                            resources_per_worker={"CPU": d.cpus_per_worker, **({"GPU": 1} if d.use_gpu else {})})
    run = RunConfig(
        name=name,
        storage_path=str(storage),
        callbacks=list(callbacks) or None,
        failure_config=FailureConfig(max_failures=d.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": cfg.model_dump(mode="json"), "runtime": _runtime(True, epoch_hook)},
        scaling_config=scaling, run_config=run,
        torch_config=TorchConfig(backend="nccl" if d.use_gpu else "gloo"),
    )
    try:
        result = trainer.fit()
    except Exception as exc:
        diverged = diverged_worker(exc)
        if diverged is not None:  # the same error as an in-process run, not Ray's wrapper
            raise diverged from exc
        raise
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {run.name} finished without a checkpoint")
    return result


def diverged_worker(exc: BaseException):
    """The NonFiniteLossError of a worker inside Ray Train's failure (`WorkerGroupError` keeps
    each failed rank's own exception in `worker_failures`), else None."""
    from emoloom.train.loop import NonFiniteLossError

    failures = getattr(exc, "worker_failures", None) or {}
    return next((e for _, e in sorted(failures.items()) if isinstance(e, NonFiniteLossError)), None)


def _export(checkpoint: Path, out: Path) -> dict:
    """Copy the adapter, heads and metrics of a checkpoint into the run folder."""
    adapter = out / "adapter"
    shutil.rmtree(adapter, ignore_errors=True)
    shutil.copytree(checkpoint / "adapter", adapter)
    shutil.copy2(checkpoint / "heads.pt", out / "heads.pt")
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
