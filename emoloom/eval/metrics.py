"""The paper's metrics over prediction rows (scikit-learn / scipy / numpy).

Input: prediction rows as written to predictions.jsonl (see `emoloom.eval.run`): each has
``corpus, split, taxonomy, parse_ok, labels, vad, gold_labels, gold_vad`` and, for Valence Flip
records, ``flip_of``.

Every task metric comes twice:

* ``ok_only``  - over ParseOK rows only, as the paper reports them;
* ``all_rows`` - over every row, a parse failure counting as wrong: an empty label set, and for
                 VAD the midpoint (0.5, 0.5, 0.5) imputed; a Valence Flip pair with a failed
                 member counts as not moving the right way.

Definitions (choices the paper leaves open are marked *):

* Labels: multi-label, binarized over the taxonomy (`MultiLabelBinarizer`). Macro-F1 and
  Macro-Recall average over the labels that occur in the gold or the predictions of the group*
  (a label absent from both would add an arbitrary 0 or 1 on a small set); per-label F1 is
  reported for every taxonomy label (0 when undefined). Micro-F1 pools all labels.
  Rows without gold labels are left out of label metrics.
* Ekman Macro-F1: gold and predicted labels projected with `labels.to_ekman`, then as above.
* VAD: 1 - RMSE over all three dimensions pooled; Pearson r and Lin's CCC per dimension
  (population moments; None when undefined, e.g. a constant prediction).
* Polarity sensitivity: over pairs (flip record with ``flip_of`` = a source record's id, both
  in the evaluated rows, both with gold VAD), the share whose predicted valence moves in the
  direction of the gold valence: sign(v_flip - v_src) equal for gold and prediction. Pairs with
  equal gold valence carry no direction and are left out*.
* Bootstrap: 95% percentile interval of Macro-F1 over `n` resamples of the rows (seeded numpy;
  the macro label set is fixed to the full sample's).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

from emoloom.labels import EKMAN, TAXONOMIES, to_ekman

MIDPOINT = (0.5, 0.5, 0.5)
DIMS = ("v", "a", "d")


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def binarize(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], classes: Sequence[str]):
    """Indicator matrices (n x len(classes)); labels outside `classes` are dropped."""
    from sklearn.preprocessing import MultiLabelBinarizer

    known = set(classes)
    mlb = MultiLabelBinarizer(classes=list(classes))
    y = mlb.fit_transform([[l for l in g if l in known] for g in gold])
    p = mlb.transform([[l for l in q if l in known] for q in pred])
    return y, p


def active_labels(y: np.ndarray, p: np.ndarray) -> list[int]:
    """Columns with gold support or a prediction: the labels macro averages run over."""
    return [int(i) for i in np.flatnonzero((y.sum(0) + p.sum(0)) > 0)]


def label_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], classes: Sequence[str]) -> dict:
    from sklearn.metrics import f1_score, recall_score

    if not gold:
        return {"n": 0, "macro_f1": None, "macro_recall": None, "micro_f1": None, "per_label_f1": {},
                "macro_labels": 0}
    y, p = binarize(gold, pred, classes)
    act = active_labels(y, p)
    per = f1_score(y, p, average=None, zero_division=0)
    return {
        "n": len(gold),
        "macro_f1": _r(f1_score(y, p, average="macro", labels=act, zero_division=0)) if act else None,
        "macro_recall": _r(recall_score(y, p, average="macro", labels=act, zero_division=0)) if act else None,
        "micro_f1": _r(f1_score(y, p, average="micro", zero_division=0)),
        "per_label_f1": {c: _r(f) for c, f in zip(classes, per)},
        "macro_labels": len(act),
    }


def weighted_macro_f1(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro-F1 over the columns of `y`/`p` (rows x labels indicators) once per row of `weights`
    (B x rows: how often each row counts, e.g. bootstrap resample counts; all ones = the sample).

    Resampling only reweights rows, so tp/fp/fn of every resample are matrix products: no
    per-resample scikit-learn call. A label whose tp+fp+fn is 0 in a resample scores 0 there."""
    y, p = y.astype(np.float64), p.astype(np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    tp = weights @ (y * p)
    fp = weights @ ((1 - y) * p)
    fn = weights @ (y * (1 - p))
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1.mean(axis=1)


def bootstrap_macro_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], classes: Sequence[str],
                       n: int = 1000, seed: int = 0) -> list[float] | None:
    """[low, high] 95% percentile interval of Macro-F1 over `n` row resamples."""
    if not gold or n <= 0:
        return None
    y, p = binarize(gold, pred, classes)
    act = active_labels(y, p)
    if not act:
        return None
    rng = np.random.default_rng(seed)
    rows = len(y)
    weights = np.stack([np.bincount(rng.integers(0, rows, rows), minlength=rows) for _ in range(n)]).astype(np.float64)
    macro = weighted_macro_f1(y[:, act], p[:, act], weights)
    lo, hi = np.percentile(macro, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


# ---------------------------------------------------------------------------------------------
# VAD
# ---------------------------------------------------------------------------------------------


def ccc(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Lin's concordance correlation coefficient (population moments)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return None
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    denom = x.var() + y.var() + (mx - my) ** 2
    return None if denom == 0 else float(2 * cov / denom)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    from scipy.stats import pearsonr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(pearsonr(x, y).statistic)


def vad_metrics(gold: Sequence[Sequence[float]], pred: Sequence[Sequence[float]]) -> dict:
    if not gold:
        return {"n": 0, "one_minus_rmse": None, "rmse": None, "pearson": None, "ccc": None}
    g, p = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    rmse = float(np.sqrt(np.mean((g - p) ** 2)))
    return {
        "n": len(g),
        "one_minus_rmse": _r(1 - rmse),
        "rmse": _r(rmse),
        "pearson": {d: _r(pearson(g[:, i], p[:, i])) for i, d in enumerate(DIMS)},
        "ccc": {d: _r(ccc(g[:, i], p[:, i])) for i, d in enumerate(DIMS)},
    }


def _vad_tuple(v: Any) -> tuple[float, float, float] | None:
    if v is None:
        return None
    if isinstance(v, dict):
        return (float(v["v"]), float(v["a"]), float(v["d"]))
    return tuple(float(x) for x in v)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Valence Flip polarity sensitivity
# ---------------------------------------------------------------------------------------------


def polarity_sensitivity(rows: Sequence[dict], ok_only: bool) -> dict:
    by_id = {r["id"]: r for r in rows}
    pairs = hits = skipped = 0
    for r in rows:
        src = by_id.get(r.get("flip_of")) if r.get("flip_of") is not None else None
        if src is None:
            continue
        g_flip, g_src = _vad_tuple(r.get("gold_vad")), _vad_tuple(src.get("gold_vad"))
        if g_flip is None or g_src is None or g_flip[0] == g_src[0]:
            skipped += 1
            continue
        both_ok = r.get("parse_ok") and src.get("parse_ok")
        if ok_only and not both_ok:
            continue
        pairs += 1
        if both_ok:
            p_flip, p_src = _vad_tuple(r["vad"]), _vad_tuple(src["vad"])
            hits += np.sign(g_flip[0] - g_src[0]) == np.sign(p_flip[0] - p_src[0])
    return {"pairs": pairs, "sensitivity": _r(hits / pairs) if pairs else None, "pairs_without_direction": skipped}


# ---------------------------------------------------------------------------------------------
# One group and the whole report
# ---------------------------------------------------------------------------------------------


def _classes(taxonomies: Iterable[str]) -> list[str]:
    out: list[str] = []
    for t in taxonomies:
        out += [l for l in TAXONOMIES[t] if l not in out]
    return out


def label_sets(rows: Sequence[dict], mode: str = "all_rows") -> tuple[list[dict], list[list[str]], list[list[str]]]:
    """(rows scored, gold label lists, predicted label lists) of the label metrics: rows without
    gold labels are left out; "ok_only" keeps ParseOK rows, "all_rows" keeps every row with a
    parse failure predicting the empty set (counted wrong)."""
    if mode not in ("ok_only", "all_rows"):
        raise ValueError(f"mode must be 'ok_only' or 'all_rows', not {mode!r}")
    lab = [r for r in rows if r.get("gold_labels") and (mode == "all_rows" or r.get("parse_ok"))]
    gold = [r["gold_labels"] for r in lab]
    pred = [(r.get("labels") or []) if r.get("parse_ok") else [] for r in lab]
    return lab, gold, pred


def row_classes(rows: Sequence[dict]) -> list[str]:
    """The label columns of a group: every label of the taxonomies its rows carry (in order)."""
    return _classes(sorted({r["taxonomy"] for r in rows}))


def group_metrics(rows: Sequence[dict], bootstrap: int = 1000, seed: int = 0) -> dict:
    taxes = sorted({r["taxonomy"] for r in rows})
    classes = _classes(taxes)
    errors = Counter(r.get("error") for r in rows if not r.get("parse_ok"))
    out: dict[str, Any] = {
        "n": len(rows),
        "taxonomies": taxes,
        "parse_ok_rate": _r(sum(bool(r.get("parse_ok")) for r in rows) / len(rows)) if rows else None,
        "parse_errors": dict(sorted(errors.items(), key=lambda kv: (-kv[1], str(kv[0])))),
    }
    with_vad = [r for r in rows if r.get("gold_vad") is not None]
    for mode in ("ok_only", "all_rows"):
        lab, gold, pred = label_sets(rows, mode)
        block = label_metrics(gold, pred, classes)
        block["macro_f1_ci95"] = bootstrap_macro_f1(gold, pred, classes, n=bootstrap, seed=seed)
        eg = [[to_ekman(r["taxonomy"], l) for l in g] for r, g in zip(lab, gold)]
        ep = [[to_ekman(r["taxonomy"], l) for l in p] for r, p in zip(lab, pred)]
        ek = label_metrics(eg, ep, EKMAN)
        block["ekman_macro_f1"] = ek["macro_f1"]
        vad_rows = [r for r in with_vad if r.get("parse_ok")] if mode == "ok_only" else with_vad
        vad = vad_metrics([_vad_tuple(r["gold_vad"]) for r in vad_rows],
                          [(_vad_tuple(r["vad"]) if r.get("parse_ok") else MIDPOINT) for r in vad_rows])
        out[mode] = {"labels": block, "vad": vad, "polarity": polarity_sensitivity(rows, ok_only=mode == "ok_only")}
    return out


def compute_metrics(rows: Sequence[dict], bootstrap: int = 1000, seed: int = 0) -> dict:
    """{"all": metrics over every row, "groups": {"<corpus>/<split>": metrics}}."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[f"{r.get('corpus')}/{r.get('split')}"].append(r)
    return {
        "all": group_metrics(rows, bootstrap, seed),
        "groups": {k: group_metrics(v, bootstrap, seed) for k, v in sorted(groups.items())},
    }
