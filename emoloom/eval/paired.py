"""Paired bootstrap over several candidates scored on the same rows: intervals, ties, rows needed.

    from emoloom.eval.paired import paired_bootstrap
    stats = paired_bootstrap({"trial_a": rows_a, "trial_b": rows_b, "floor_tfidf": rows_c})
    stats["tie_group"]                   # candidates not separated from the leader
    stats["trials"]["trial_b"]["diff_ci95"]

Rows are prediction rows as written to predictions.jsonl (`emoloom.eval.predict`). Every replicate
draws row indices once and applies them to every candidate: that pairing is what cancels the
shared difficulty of the rows, so two candidates can be separated by a difference much smaller
than either one's own interval.

It lives in `eval/` (not `screen/`) because it only needs prediction rows and `eval.metrics`: by
the layering (screen > train, eval > ...), the screen and any eval-level tool that compares
prediction files can import it, and it imports nothing above eval.

A scorer turns one candidate's aligned rows into a function of row weights (B x rows: how often
each row is drawn) returning the objective per weight row; all ones is the full sample. Scoring by
weights lets tp/fp/fn of all replicates be matrix products (`metrics.weighted_macro_f1`) instead of
one scikit-learn call per replicate and candidate.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

from .metrics import active_labels, binarize, label_sets, row_classes, weighted_macro_f1

__all__ = ["Scorer", "align_rows", "objective_scorer", "paired_bootstrap", "strict_macro_f1"]

WeightedObjective = Callable[[np.ndarray], np.ndarray]
Scorer = Callable[[Sequence[dict]], WeightedObjective]
Z95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)


def strict_macro_f1(rows: Sequence[dict]) -> WeightedObjective:
    """The screen's objective (`screen.trial.objective_of`): Macro-F1 over the rows' taxonomies
    with parse failures counted as wrong, i.e. metrics' ``all_rows.labels.macro_f1``. The macro
    label set is the full sample's (as in `metrics.bootstrap_macro_f1`); rows without gold labels
    count for nothing; no scorable label gives 0 (objective_of's value for None)."""
    rows = list(rows)
    keep = [i for i, r in enumerate(rows) if r.get("gold_labels")]
    _, gold, pred = label_sets(rows, "all_rows")
    y, p = binarize(gold, pred, row_classes(rows)) if gold else (None, None)
    act = active_labels(y, p) if gold else []

    def score(weights: np.ndarray) -> np.ndarray:
        weights = np.atleast_2d(weights)
        if not act:
            return np.zeros(len(weights))
        return weighted_macro_f1(y[:, act], p[:, act], weights[:, keep])

    return score


def objective_scorer(objective: Callable[[Sequence[dict]], float]) -> Scorer:
    """A scorer from any objective of a list of rows (each row repeated as often as drawn).
    General but one call per replicate and candidate: for objectives without a weighted form."""

    def scorer(rows: Sequence[dict]) -> WeightedObjective:
        rows = list(rows)

        def score(weights: np.ndarray) -> np.ndarray:
            out = []
            for w in np.atleast_2d(weights).astype(np.int64):
                out.append(float(objective([r for r, k in zip(rows, w) for _ in range(k)])))
            return np.asarray(out)

        return score

    return scorer


def align_rows(trials: Mapping[str, Sequence[dict]]) -> tuple[list[str], dict[str, list[dict]]]:
    """(row ids, {name: rows in that id order}): every candidate's rows put in the first one's
    order. Raises ValueError unless all hold exactly the same ids, each once, with the same gold
    labels (otherwise they were not scored on the same rows and pairing would be meaningless)."""
    if not trials:
        raise ValueError("paired bootstrap: no candidates given")
    names = list(trials)
    by_name: dict[str, dict[str, dict]] = {}
    for name in names:
        rows = list(trials[name])
        ids = [str(r["id"]) for r in rows]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"paired bootstrap: candidate {name!r} has row id {dup!r} more than once")
        by_name[name] = {str(r["id"]): r for r in rows}
    ids = [str(r["id"]) for r in trials[names[0]]]
    ref = by_name[names[0]]
    for name in names[1:]:
        have = by_name[name]
        extra, missing = sorted(set(have) - set(ref)), sorted(set(ref) - set(have))
        if extra or missing:
            raise ValueError(
                f"paired bootstrap: candidate {name!r} was not scored on the same rows as {names[0]!r}: "
                f"{len(missing)} ids missing (e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]})")
        differ = [i for i in ids if list(have[i].get("gold_labels") or []) != list(ref[i].get("gold_labels") or [])]
        if differ:
            raise ValueError(f"paired bootstrap: candidates {names[0]!r} and {name!r} disagree on the gold labels "
                             f"of {len(differ)} rows (e.g. id {differ[0]!r}): not the same evaluation rows")
    return ids, {name: [by_name[name][i] for i in ids] for name in names}


def _resample_weights(n: int, replicates: int, seed: int) -> np.ndarray:
    """B x n draw counts: row indices drawn with replacement once per replicate (seeded)."""
    idx = np.random.default_rng(seed).integers(0, n, size=(replicates, n))
    flat = (idx + n * np.arange(replicates)[:, None]).ravel()
    return np.bincount(flat, minlength=replicates * n).reshape(replicates, n).astype(np.float64)


def _ci(values: np.ndarray) -> list[float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def paired_bootstrap(trials: Mapping[str, Sequence[dict]], *, scorer: Scorer = strict_macro_f1,
                     replicates: int = 1000, seed: int = 0) -> dict:
    """Paired bootstrap of `scorer`'s objective over candidates evaluated on the same rows.

    trials: {name: prediction rows}; the rows are aligned by id (`align_rows`).
    Returns (floats rounded to 4 places)::

        n_rows, replicates, seed
        ranking      names by full-sample objective, best first (ties keep input order)
        leader       ranking[0]
        trials       {name: {objective, ci95, diff_to_leader, diff_ci95, p_diff_le_0, tied}}
        tie_group    names whose diff_ci95 contains 0 (the leader included), in ranking order
        separation   {runner_up, mean_diff, sd_diff, n_needed, separated}

    * objective: on all rows; ci95: 95% percentile interval over the replicates.
    * diff_to_leader = leader - candidate (>= 0 on the full sample), with its paired 95% interval;
      p_diff_le_0 = share of replicates where the candidate is at least as good as the leader
      (the chance it could rank first); for the leader itself the diff is 0, ci [0, 0], p None.
    * separation (rank 1 vs rank 2): mean_diff and sd_diff (bootstrap SD of the paired diff).
      n_needed estimates the rows at which the 95% interval of that diff would exclude 0 if the
      mean difference stayed as observed and the SD shrank as 1/sqrt(rows) (standard error of a
      mean): n_needed = n_rows * (1.96 * sd_diff / mean_diff)^2, rounded up (at least 1). A planning figure:
      Macro-F1 over rare labels makes the real curve noisier. None when the two are identical on
      every replicate or their mean difference is 0 (no number of rows separates them).
    """
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    ids, aligned = align_rows(trials)
    if not ids:
        raise ValueError("paired bootstrap: the candidates have no rows")
    n = len(ids)
    names = list(aligned)
    weights = _resample_weights(n, replicates, seed)
    full = np.ones((1, n))
    scores = [scorer(aligned[name]) for name in names]
    point = np.array([float(s(full)[0]) for s in scores])
    boot = np.stack([s(weights) for s in scores])  # candidates x replicates
    order = sorted(range(len(names)), key=lambda i: -point[i])  # stable: ties keep input order
    lead = order[0]
    diff = boot[lead][None, :] - boot  # leader - candidate, per replicate
    out_trials: dict[str, dict] = {}
    tie_group: list[str] = []
    for i in order:
        d_ci = _ci(diff[i])
        tied = d_ci[0] <= 0 <= d_ci[1]
        out_trials[names[i]] = {
            "objective": round(float(point[i]), 4),
            "ci95": _ci(boot[i]),
            "diff_to_leader": round(float(point[lead] - point[i]), 4),
            "diff_ci95": d_ci,
            "p_diff_le_0": None if i == lead else round(float(np.mean(diff[i] <= 0)), 4),
            "tied": bool(tied),
        }
        if tied:
            tie_group.append(names[i])
    separation = {"runner_up": None, "mean_diff": None, "sd_diff": None, "n_needed": None, "separated": None}
    if len(order) > 1:
        second = order[1]
        mean = float(point[lead] - point[second])
        sd = float(np.std(diff[second], ddof=1)) if replicates > 1 else 0.0
        needed = max(1, math.ceil(n * (Z95 * sd / mean) ** 2)) if mean > 0 else None
        separation = {"runner_up": names[second], "mean_diff": round(mean, 4), "sd_diff": round(sd, 4),
                      "n_needed": needed, "separated": not out_trials[names[second]]["tied"]}
    return {"n_rows": n, "replicates": replicates, "seed": seed, "ranking": [names[i] for i in order],
            "leader": names[lead], "trials": out_trials, "tie_group": tie_group, "separation": separation}
