"""Evaluation on a pool of Ray actors, each holding one model replica.

* Each actor loads the candidate once (in `__init__`) and then decodes whole shards.
* Shards come from `predict.plan_shards` (similar prompt lengths together; independent of the
  pool size), are fed through `ray.util.ActorPool`, and the rows are put back in input order.
* Retries are Ray's own: an actor whose process dies is restarted (`max_restarts`; it reloads
  the model) and the shard it was running is retried on it (`max_task_retries`); a shard that
  raises is retried too (`retry_exceptions`). Rows of a shard that still fails are reported with
  ``error: "actor_failed"``, never dropped, and `EvalPool.failures` says why.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from emoloom.contract import Record
from emoloom.models import ModelSpec

from .decoding import DEFAULT_BATCH_SIZE
from .predict import failed_row, plan_shards

# Passed to every actor: one BLAS/OpenMP thread per actor (actors are the parallelism), the
# offline switches and the model cache of the driver.
PASS_ENV = ("EMOLOOM_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
            "TORCH_EXTENSIONS_DIR")


def ensure_ray() -> None:
    import ray

    if not ray.is_initialized():
        from emoloom.local_ray import init_ray

        init_ray(include_dashboard=False)


def actor_env(threads: int = 1) -> dict[str, str]:
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    env.update({k: os.environ[k] for k in PASS_ENV if k in os.environ})
    return env


RETRIES = 1  # further tries of a shard that raised or whose actor died
RESTARTS = 4  # restarts of one actor over the pool's life; past that its shards fail and are reported


class _EvalActor:
    """Body of the Ray actor (wrapped with ray.remote in `EvalPool`)."""

    def __init__(self, spec: dict, adapter: str | None, decoder: str, max_new_tokens: int, batch_size: int,
                 device: str | None, merge: bool) -> None:
        import torch

        from .candidate import load_candidate
        from .predict import Predictor

        if device is None:
            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        candidate = load_candidate(ModelSpec.model_validate(spec), adapter, device=device, merge=merge)
        self.predictor = Predictor(candidate, decoder, max_new_tokens, batch_size)

    def run(self, shard: int, records: list[Record], max_new_tokens: int | None = None):
        return self.predictor.predict(records, max_new_tokens=max_new_tokens)

    def ignored_settings(self) -> dict:
        return self.predictor.decoder.ignored_settings

    def pid(self) -> int:
        return os.getpid()


class EvalPool:
    """A reusable pool of evaluation actors for one candidate.

        with EvalPool(ModelSpec(name="tiny-qwen2"), None, actors=2) as pool:
            rows = pool.run(records)
    """

    actor_body = _EvalActor

    def __init__(self, model: ModelSpec | str, adapter: str | None = None, *, decoder: str = "fast",
                 max_new_tokens: int = 96, batch_size: int = DEFAULT_BATCH_SIZE, actors: int = 2,
                 gpus_per_actor: float | None = None, merge_adapter: bool = True) -> None:
        import ray

        from emoloom.models import model_path

        if actors < 1:
            raise ValueError(f"actors must be >= 1, got {actors}")
        spec = ModelSpec(name=model) if isinstance(model, str) else model
        model_path(spec)  # a built-in built, a GGUF converted once here, not racing in every actor
        ensure_ray()
        if gpus_per_actor is None:
            gpus = ray.cluster_resources().get("GPU", 0)
            gpus_per_actor = min(1.0, gpus / actors) if gpus else 0.0
        self.gpus_per_actor = gpus_per_actor
        free = ray.available_resources().get("CPU", 0)
        if free < actors:
            # Ray queues actors it cannot place without a word; say why a run may wait.
            print(f"EvalPool: {actors} actors need {actors} CPUs but Ray has {free:g} free; "
                  f"actors will wait until CPUs are released", file=sys.stderr)
        self._cls = ray.remote(self.actor_body).options(
            num_cpus=1, num_gpus=gpus_per_actor, max_restarts=RESTARTS, max_task_retries=RETRIES,
            runtime_env={"env_vars": actor_env()},
        )
        self._args = (spec.model_dump(mode="json"), None if adapter is None else str(adapter), decoder,
                      max_new_tokens, batch_size, "cuda" if gpus_per_actor else None, merge_adapter)
        self.actors = [self._new_actor() for _ in range(actors)]
        self.failures: list[str] = []  # one line per shard that failed, for the report

    def _new_actor(self):
        return self._cls.remote(*self._args)

    def resize(self, actors: int) -> None:
        """Grow or shrink the pool (models already loaded in kept actors stay loaded)."""
        import ray

        if actors < 1:
            raise ValueError(f"actors must be >= 1, got {actors}")
        while len(self.actors) < actors:
            self.actors.append(self._new_actor())
        while len(self.actors) > actors:
            ray.kill(self.actors.pop())

    def ignored_settings(self) -> dict:
        """The checkpoint's generation settings greedy decoding leaves out (from one actor)."""
        import ray

        return ray.get(self.actors[0].ignored_settings.remote())

    def __enter__(self) -> "EvalPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []

    def run(self, records: Sequence[Record], shard_size: int = 32, progress: Callable[[int], None] | None = None,
            max_new_tokens: int | None = None) -> list[dict]:
        """Prediction rows for `records`, in input order (`max_new_tokens` overrides the pool's)."""
        from ray.util import ActorPool

        if not self.actors:
            raise RuntimeError("the pool is closed")
        records = list(records)
        shards = plan_shards(records, shard_size)
        pool = ActorPool(list(self.actors))
        for s, idx in enumerate(shards):
            pool.submit(lambda actor, job: actor.run.options(retry_exceptions=True).remote(*job, max_new_tokens),
                        (s, [records[i] for i in idx]))
        rows: list[dict | None] = [None] * len(records)
        for s, idx in enumerate(shards):  # get_next: submission order, whatever failed
            try:
                out = pool.get_next()
            except Exception as exc:  # noqa: BLE001 - any failure of the task or its actor, after Ray's retries
                text = str(exc).strip()
                reason = f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"
                self.failures.append(f"shard {s}: {reason}")
                out = [failed_row(records[i], reason) for i in idx]
            for i, row in zip(idx, out):
                rows[i] = row
            if progress:
                progress(len(idx))
        return rows  # type: ignore[return-value]
