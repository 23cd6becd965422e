"""Resource planning: what one trial needs and how many run at once (no Ray needed)."""
from __future__ import annotations

import math
from typing import Any

from emoloom.screen.config import ClusterShape, ScreenConfig
from emoloom.screen.space import SearchSpace


def trial_demand(cfg: ScreenConfig) -> dict[str, float]:
    """Peak CPUs/GPUs of one trial. Training and evaluation run one after the other, so the
    GPU peak is the larger of the two phases; CPUs of the trial driver are held throughout."""
    r = cfg.resources
    train_cpu = r.train_workers * r.cpus_per_worker
    eval_cpu = r.eval_actors * 1.0
    train_gpu = r.train_workers * r.gpus_per_worker
    eval_gpu = r.eval_actors * r.gpus_per_eval_actor
    return {"CPU": r.driver_cpus + max(train_cpu, eval_cpu), "GPU": max(train_gpu, eval_gpu)}


def concurrency(cfg: ScreenConfig, space: SearchSpace, cluster: ClusterShape) -> dict[str, Any]:
    need = trial_demand(cfg)
    total_cpu = cluster.nodes * cluster.cpus_per_node
    total_gpu = cluster.nodes * cluster.gpus_per_node
    fits = [math.floor(total_cpu / need["CPU"])] if need["CPU"] > 0 else []
    if need["GPU"] > 0:
        fits.append(math.floor(total_gpu / need["GPU"]) if total_gpu else 0)
    by_resources = min(fits) if fits else space.max_concurrent
    at_once = max(0, min(space.max_concurrent, by_resources, space.num_trials))
    r = cfg.resources
    return {
        "cluster": cluster.model_dump(),
        "per_trial": {
            "driver_cpus": r.driver_cpus,
            "train_workers": r.train_workers,
            "deepspeed_ranks": r.train_workers,
            "gpus_per_train_worker": r.gpus_per_worker,
            "eval_actors": r.eval_actors,
            "eval_actors_per_gpu": (1 / r.gpus_per_eval_actor) if r.gpus_per_eval_actor else None,
            "peak_cpus": need["CPU"],
            "peak_gpus": need["GPU"],
        },
        "trials_at_once": at_once,
        "limited_by": "space.max_concurrent" if at_once == space.max_concurrent else "cluster resources",
        "waves": math.ceil(space.num_trials / at_once) if at_once else None,
    }
