"""Paired bootstrap: agrees with a direct resample-and-score computation; ties and separation."""
from __future__ import annotations

import random

import numpy as np
import pytest
from sklearn.metrics import f1_score
from sklearn.preprocessing import MultiLabelBinarizer

from emoloom.eval.metrics import compute_metrics, label_metrics
from emoloom.eval.paired import align_rows, objective_scorer, paired_bootstrap, strict_macro_f1
from emoloom.labels import GOEMOTIONS

LABELS = list(GOEMOTIONS)


def _gold(n: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(LABELS[:8])] + ([rng.choice(LABELS[:8])] if rng.random() < 0.2 else []) for _ in range(n)]


def _rows(gold, accuracy: float, seed: int, fail_rate: float = 0.1) -> list[dict]:
    """Prediction rows: right with probability `accuracy`, parse failure with `fail_rate`."""
    rng = random.Random(seed)
    rows = []
    for i, g in enumerate(gold):
        ok = rng.random() >= fail_rate
        labels = list(g) if rng.random() < accuracy else [rng.choice(LABELS[:10])]
        rows.append({"id": f"r{i}", "corpus": "synthetic", "split": "dev", "taxonomy": "goemotions",
                     "parse_ok": ok, "labels": labels if ok else None, "vad": None, "error": None if ok else "no_json",
                     "gold_labels": list(dict.fromkeys(g)), "gold_vad": None})
    return rows


def test_agrees_with_direct_numpy_computation():
    gold = _gold(40)
    trials = {"a": _rows(gold, 0.5, 1), "b": _rows(gold, 0.7, 2), "c": _rows(gold, 0.6, 3)}
    B, seed = 60, 7
    stats = paired_bootstrap(trials, replicates=B, seed=seed)

    # Direct: draw the row indices the same way, materialise each resample, score it with
    # scikit-learn over the full sample's macro label set, then take percentiles.
    idx = np.random.default_rng(seed).integers(0, len(gold), size=(B, len(gold)))
    direct = {}
    for name, rows in trials.items():
        pred = [r["labels"] if r["parse_ok"] else [] for r in rows]
        mlb = MultiLabelBinarizer(classes=LABELS)
        y, p = mlb.fit_transform([r["gold_labels"] for r in rows]), mlb.transform(pred)
        act = [i for i in range(len(LABELS)) if y[:, i].any() or p[:, i].any()]
        direct[name] = np.array([f1_score(y[k], p[k], average="macro", labels=act, zero_division=0) for k in idx])
        full = compute_metrics(rows, bootstrap=0)["all"]["all_rows"]["labels"]["macro_f1"]
        assert stats["trials"][name]["objective"] == pytest.approx(full, abs=1e-4)
        assert stats["trials"][name]["ci95"] == pytest.approx(list(np.percentile(direct[name], [2.5, 97.5])), abs=1e-4)
    leader = stats["leader"]
    assert leader == max(trials, key=lambda k: stats["trials"][k]["objective"]) == "b"
    for name in trials:
        d = direct[leader] - direct[name]
        t = stats["trials"][name]
        assert t["diff_ci95"] == pytest.approx(list(np.percentile(d, [2.5, 97.5])), abs=1e-4)
        if name != leader:
            assert t["p_diff_le_0"] == pytest.approx(np.mean(d <= 0), abs=1e-4)
            assert t["tied"] == (t["diff_ci95"][0] <= 0 <= t["diff_ci95"][1])
    second = stats["ranking"][1]
    sd = np.std(direct[leader] - direct[second], ddof=1)
    assert stats["separation"]["sd_diff"] == pytest.approx(sd, abs=1e-4)
    mean = stats["trials"][second]["diff_to_leader"]
    assert stats["separation"]["n_needed"] == pytest.approx(40 * (1.959964 * sd / mean) ** 2, rel=0.02, abs=1)


def test_generic_objective_scorer_matches_weighted_scorer():
    gold = _gold(25, seed=3)
    trials = {"a": _rows(gold, 0.5, 4), "b": _rows(gold, 0.8, 5)}

    def objective(rows):
        gold_ = [r["gold_labels"] for r in rows]
        pred = [(r["labels"] or []) if r["parse_ok"] else [] for r in rows]
        return label_metrics(gold_, pred, LABELS)["macro_f1"] or 0.0

    fast = paired_bootstrap(trials, replicates=30, seed=1)
    slow = paired_bootstrap(trials, replicates=30, seed=1, scorer=objective_scorer(objective))
    # Only the macro label set differs: the generic path recomputes it per resample.
    assert fast["trials"]["a"]["objective"] == pytest.approx(slow["trials"]["a"]["objective"], abs=1e-4)
    assert fast["ranking"] == slow["ranking"]


def test_identical_candidates_are_tied():
    gold = _gold(120)
    rows = _rows(gold, 0.6, 1)
    stats = paired_bootstrap({"x": rows, "y": [dict(r) for r in rows]}, replicates=200, seed=0)
    assert stats["tie_group"] == ["x", "y"]
    assert stats["trials"]["y"]["diff_ci95"] == [0.0, 0.0]
    assert stats["trials"]["y"]["p_diff_le_0"] == 1.0
    assert stats["separation"]["n_needed"] is None and stats["separation"]["separated"] is False


def test_clearly_better_candidate_is_separated():
    gold = _gold(200)
    stats = paired_bootstrap({"weak": _rows(gold, 0.3, 1), "strong": _rows(gold, 0.9, 2, fail_rate=0.0),
                              "mid": _rows(gold, 0.45, 3)}, replicates=500, seed=0)
    assert stats["leader"] == "strong" and stats["tie_group"] == ["strong"]
    assert stats["ranking"][0] == "strong"
    for name in ("weak", "mid"):
        assert stats["trials"][name]["diff_ci95"][0] > 0 and stats["trials"][name]["p_diff_le_0"] == 0.0
    sep = stats["separation"]
    assert sep["separated"] is True and sep["n_needed"] < 200
    assert stats["trials"]["strong"]["ci95"][0] <= stats["trials"]["strong"]["objective"] <= stats["trials"]["strong"]["ci95"][1]


def test_seeded_and_order_free():
    gold = _gold(60)
    a, b = _rows(gold, 0.5, 1), _rows(gold, 0.6, 2)
    one = paired_bootstrap({"a": a, "b": b}, replicates=100, seed=3)
    assert one == paired_bootstrap({"a": a, "b": b}, replicates=100, seed=3)
    shuffled = list(b)
    random.Random(0).shuffle(shuffled)
    assert paired_bootstrap({"a": a, "b": shuffled}, replicates=100, seed=3) == one  # aligned by id
    assert paired_bootstrap({"a": a, "b": b}, replicates=100, seed=4) != one


def test_rows_must_match():
    gold = _gold(10)
    a, b = _rows(gold, 0.5, 1), _rows(gold, 0.5, 2)
    with pytest.raises(ValueError, match="not scored on the same rows"):
        paired_bootstrap({"a": a, "b": b[:-1]})
    with pytest.raises(ValueError, match="more than once"):
        align_rows({"a": a + a[:1]})
    other = [dict(r, gold_labels=["anger"]) for r in b]
    with pytest.raises(ValueError, match="disagree on the gold labels"):
        paired_bootstrap({"a": a, "b": other})


def test_no_scorable_rows_scores_zero():
    rows = [dict(r, gold_labels=[]) for r in _rows(_gold(5), 0.5, 1)]
    assert strict_macro_f1(rows)(np.ones((2, 5))).tolist() == [0.0, 0.0]
