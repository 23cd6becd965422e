"""The cost ledger of a screen: CPU- and GPU-seconds per trial, evaluation share, and what early
stopping saved.

    ledger = cost_ledger({"t1": {"train_s": 40, "epoch_eval_s": 6, "final_eval_s": 9, "cpus": 2,
                                 "gpus": 0, "epochs_done": 3, "finished": True}, ...}, max_t=3)
    ledger["totals"]["cpu_s"], ledger["eval_share"]["cpu"], ledger["early_stopping"]["saved_cpu_s"]

A trial holds its resources for its whole wall time, so resource-seconds are wall seconds times
the CPUs (GPUs) it was given.
"""
from __future__ import annotations

from typing import Mapping

__all__ = ["cost_ledger"]

FIELDS = ("train_s", "epoch_eval_s", "final_eval_s", "cpus", "gpus", "epochs_done")


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def _r(x: float) -> float:
    return round(float(x), 3)


def cost_ledger(trials: Mapping[str, Mapping], max_t: int) -> dict:
    """Per-trial and screen-wide cost, evaluation share and the early-stopping saving.

    trials: {trial id: {train_s, epoch_eval_s, final_eval_s, cpus, gpus, epochs_done, finished}}
            with train_s the training wall seconds without the per-epoch evaluations, and
            finished True for a trial that ran to its end (False: stopped early, e.g. by ASHA).
    max_t:  the epochs a trial runs when nothing stops it.

    Returns::

        trials          {id: {wall_s, cpu_s, gpu_s, eval_s, eval_cpu_s, eval_gpu_s, epochs_done,
                              finished}}
        totals          {trials, finished, wall_s, cpu_s, gpu_s, train_cpu_s, eval_cpu_s, eval_gpu_s}
                        (wall_s: summed trial seconds, not the screen's elapsed time)
        eval_share      {wall, cpu, gpu}: evaluation's share of the trials' seconds (None when
                        the total is 0)
        early_stopping  {estimable, basis_trials, epoch_s, final_eval_s, cpu_s_at_max_t,
                         gpu_s_at_max_t, saved_cpu_s, saved_gpu_s, saved_share}

    Early stopping is an estimate, not a measurement: a trial that stopped after k < max_t
    epochs is charged (max_t - k) more epochs at the mean per-epoch wall time (training + epoch
    evaluation) of the finished trials, plus their mean final-evaluation time when it had none,
    each times its own CPUs and GPUs. With no finished trial there is nothing to extrapolate
    from: estimable False and the estimates None. saved_share = saved / cost at max_t (CPU, or
    GPU when no CPU-seconds were counted).
    """
    if max_t < 1:
        raise ValueError(f"max_t must be >= 1, got {max_t}")
    per: dict[str, dict] = {}
    for tid, t in trials.items():
        missing = [f for f in (*FIELDS, "finished") if f not in t]
        if missing:
            raise ValueError(f"cost ledger: trial {tid!r} lacks {', '.join(missing)}")
        bad = [f for f in FIELDS if t[f] is None or t[f] < 0]
        if bad:
            raise ValueError(f"cost ledger: trial {tid!r} has negative or missing {', '.join(bad)}")
        wall = t["train_s"] + t["epoch_eval_s"] + t["final_eval_s"]
        ev = t["epoch_eval_s"] + t["final_eval_s"]
        per[tid] = {"wall_s": _r(wall), "cpu_s": _r(wall * t["cpus"]), "gpu_s": _r(wall * t["gpus"]),
                    "eval_s": _r(ev), "eval_cpu_s": _r(ev * t["cpus"]), "eval_gpu_s": _r(ev * t["gpus"]),
                    "epochs_done": int(t["epochs_done"]), "finished": bool(t["finished"])}
    tot = lambda key: _r(sum(p[key] for p in per.values()))  # noqa: E731
    totals = {"trials": len(per), "finished": sum(p["finished"] for p in per.values()), "wall_s": tot("wall_s"),
              "cpu_s": tot("cpu_s"), "gpu_s": tot("gpu_s"), "train_cpu_s": _r(tot("cpu_s") - tot("eval_cpu_s")),
              "eval_cpu_s": tot("eval_cpu_s"), "eval_gpu_s": tot("eval_gpu_s")}
    eval_share = {"wall": _share(tot("eval_s"), totals["wall_s"]), "cpu": _share(totals["eval_cpu_s"], totals["cpu_s"]),
                  "gpu": _share(totals["eval_gpu_s"], totals["gpu_s"])}
    return {"trials": per, "totals": totals, "eval_share": eval_share,
            "early_stopping": _early_stopping(trials, per, totals, max_t)}


def _early_stopping(trials: Mapping[str, Mapping], per: dict, totals: dict, max_t: int) -> dict:
    basis = [t for t in trials.values() if t["finished"] and t["epochs_done"] > 0]
    out = {"estimable": bool(basis), "basis_trials": len(basis), "epoch_s": None, "final_eval_s": None,
           "cpu_s_at_max_t": None, "gpu_s_at_max_t": None, "saved_cpu_s": None, "saved_gpu_s": None,
           "saved_share": None}
    if not basis:
        return out
    epoch_s = sum((t["train_s"] + t["epoch_eval_s"]) / t["epochs_done"] for t in basis) / len(basis)
    final_s = sum(t["final_eval_s"] for t in basis) / len(basis)
    cpu = gpu = 0.0
    for tid, t in trials.items():
        extra = max(0, max_t - t["epochs_done"]) * epoch_s
        if not t["finished"] and t["final_eval_s"] == 0:
            extra += final_s  # a stopped trial skipped its final evaluation (also when stopped at max_t)
        cpu += per[tid]["cpu_s"] + extra * t["cpus"]
        gpu += per[tid]["gpu_s"] + extra * t["gpus"]
    saved_cpu, saved_gpu = cpu - totals["cpu_s"], gpu - totals["gpu_s"]
    out.update({"epoch_s": _r(epoch_s), "final_eval_s": _r(final_s), "cpu_s_at_max_t": _r(cpu),
                "gpu_s_at_max_t": _r(gpu), "saved_cpu_s": _r(saved_cpu), "saved_gpu_s": _r(saved_gpu),
                "saved_share": _share(saved_cpu, cpu) if cpu > 0 else _share(saved_gpu, gpu)})
    return out
