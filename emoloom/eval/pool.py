"""Evaluation on a pool of Ray actors, each holding one model replica.

* Each actor loads the candidate once (in `__init__`) and then decodes whole shards.
* Shards come from `predict.plan_shards` (similar prompt lengths together; independent of the
  pool size), are fed through `ray.util.ActorPool`, and the rows are put back in input order.
* A shard whose actor raises or dies is retried once on a fresh actor (the failing actor is
  killed and replaced: a raise may have left it in a bad state). Rows of a shard that fails
  twice are reported with ``error: "actor_failed"``, never dropped.

Results are taken with `ActorPool.get_next` (submission order): it says which submission failed
whatever the failure, since a dead actor's error carries no shard.
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

    def run(self, shard: int, attempt: int, records: list[Record], fault: str | None = None,
            max_new_tokens: int | None = None):
        if fault == "raise":  # test hook: fail inside the shard
            raise RuntimeError(f"injected failure in shard {shard} (attempt {attempt})")
        if fault == "exit":  # test hook: the actor process dies
            os._exit(1)
        return self.predictor.predict(records, max_new_tokens=max_new_tokens)

    def pid(self) -> int:
        return os.getpid()


class EvalPool:
    """A reusable pool of evaluation actors for one candidate.

        with EvalPool(ModelSpec(name="tiny-qwen2"), None, actors=2) as pool:
            rows = pool.run(records)
    """

    def __init__(self, model: ModelSpec | str, adapter: str | None = None, *, decoder: str = "fast",
                 max_new_tokens: int = 96, batch_size: int = DEFAULT_BATCH_SIZE, actors: int = 2,
                 gpus_per_actor: float | None = None, merge_adapter: bool = True) -> None:
        import ray

        from emoloom.models import builtin_path, is_builtin

        if actors < 1:
            raise ValueError(f"actors must be >= 1, got {actors}")
        spec = ModelSpec(name=model) if isinstance(model, str) else model
        if is_builtin(spec.name):
            builtin_path(spec.name, spec.seed)  # build once here, not racing in every actor
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
        self._cls = ray.remote(_EvalActor).options(
            num_cpus=1, num_gpus=gpus_per_actor, max_restarts=0, max_task_retries=0,
            runtime_env={"env_vars": actor_env()},
        )
        self._args = (spec.model_dump(mode="json"), None if adapter is None else str(adapter), decoder,
                      max_new_tokens, batch_size, "cuda" if gpus_per_actor else None, merge_adapter)
        self.actors = [self._new_actor() for _ in range(actors)]
        self.started = actors  # actors created so far, replacements included
        self.failures: list[str] = []  # one line per failed attempt, for the report

    def _new_actor(self):
        return self._cls.remote(*self._args)

    def resize(self, actors: int) -> None:
        """Grow or shrink the pool (models already loaded in kept actors stay loaded)."""
        import ray

        if actors < 1:
            raise ValueError(f"actors must be >= 1, got {actors}")
        while len(self.actors) < actors:
            self.actors.append(self._new_actor())
            self.started += 1
        while len(self.actors) > actors:
            ray.kill(self.actors.pop())

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
            faults: dict[str, dict[int, int]] | None = None, max_new_tokens: int | None = None) -> list[dict]:
        """Prediction rows for `records`, in input order (`max_new_tokens` overrides the pool's).

        `faults` is a test hook: {"raise": {shard: n}, "exit": {shard: n}} makes the first n
        attempts of a shard raise / kill its actor.
        """
        import ray
        from ray.util import ActorPool

        if not self.actors:
            raise RuntimeError("the pool is closed")
        records = list(records)
        shards = plan_shards(records, shard_size)
        faults = faults or {}
        pool = ActorPool(list(self.actors))
        submitted: list[tuple[int, int]] = []  # (shard, attempt) in submission order
        ran_on: dict[int, object] = {}  # submission number -> actor that got it
        retired: set = set()  # ids of actors we killed: their lost tasks are not the shard's fault
        done: dict[int, list[dict]] = {}

        def submit(shard: int, attempt: int) -> None:
            number = len(submitted)
            submitted.append((shard, attempt))
            fault = next((kind for kind in ("raise", "exit") if attempt < faults.get(kind, {}).get(shard, 0)), None)

            def call(actor, shard_records):
                ran_on[number] = actor
                return actor.run.remote(shard, attempt, shard_records, fault, max_new_tokens)

            pool.submit(call, [records[i] for i in shards[shard]])

        def replace(actor, died: bool) -> None:
            if not died:
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            retired.add(actor._actor_id)
            self.actors = [a for a in self.actors if a._actor_id != actor._actor_id]
            fresh = self._new_actor()
            self.actors.append(fresh)
            self.started += 1
            pool.push(fresh)

        for s in range(len(shards)):
            submit(s, 0)
        taken = 0
        while taken < len(submitted):
            number, (shard, attempt) = taken, submitted[taken]
            taken += 1
            try:
                done[shard] = pool.get_next()
            except Exception as exc:  # noqa: BLE001 - any failure of the task or its actor
                actor = ran_on.get(number)
                if actor is not None and actor._actor_id in retired:
                    submit(shard, attempt)  # lost with an actor we retired: not this shard's failure
                    continue
                died = isinstance(exc, ray.exceptions.RayActorError)
                reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                self.failures.append(f"shard {shard} attempt {attempt}: {reason}")
                if actor is not None:
                    replace(actor, died)
                if attempt == 0:
                    submit(shard, 1)
                    continue
                done[shard] = [failed_row(records[i], reason) for i in shards[shard]]
            if progress:
                progress(len(shards[shard]))
        rows: list[dict | None] = [None] * len(records)
        for shard, idx in enumerate(shards):
            for i, row in zip(idx, done[shard]):
                rows[i] = row
        return rows  # type: ignore[return-value]
