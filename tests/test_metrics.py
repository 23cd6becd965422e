"""Metrics agree with scikit-learn / scipy and with hand-computed values."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import f1_score, recall_score
from sklearn.preprocessing import MultiLabelBinarizer

from emoloom.eval.metrics import (bootstrap_macro_f1, ccc, compute_metrics, label_metrics, pearson,
                                  polarity_sensitivity, vad_metrics)
from emoloom.labels import GOEMOTIONS


def _random_sets(rng, n, labels, max_k=3):
    return [rng.sample(labels, rng.randint(0, max_k)) for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_metrics_match_sklearn(seed):
    rng = random.Random(seed)
    labels = list(GOEMOTIONS)
    gold = [s or [rng.choice(labels)] for s in _random_sets(rng, 60, labels[:12])]
    pred = _random_sets(rng, 60, labels[:16])
    m = label_metrics(gold, pred, labels)
    mlb = MultiLabelBinarizer(classes=labels)
    y, p = mlb.fit_transform(gold), mlb.transform(pred)
    active = [i for i in range(len(labels)) if y[:, i].any() or p[:, i].any()]
    assert m["macro_labels"] == len(active)
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", labels=active, zero_division=0), abs=1e-4)
    assert m["macro_recall"] == pytest.approx(recall_score(y, p, average="macro", labels=active, zero_division=0), abs=1e-4)
    assert m["micro_f1"] == pytest.approx(f1_score(y, p, average="micro", zero_division=0), abs=1e-4)
    per = f1_score(y, p, average=None, zero_division=0)
    assert [m["per_label_f1"][l] for l in labels] == pytest.approx(list(per), abs=1e-4)


def test_perfect_and_empty_predictions():
    gold = [["joy"], ["anger", "fear"], ["neutral"]]
    assert label_metrics(gold, gold, GOEMOTIONS)["macro_f1"] == 1.0
    empty = label_metrics(gold, [[], [], []], GOEMOTIONS)
    assert empty["macro_f1"] == 0.0 and empty["micro_f1"] == 0.0


def test_ccc_and_pearson_known_values():
    x = [1.0, 2.0, 3.0, 4.0]
    assert ccc(x, x) == pytest.approx(1.0)
    # Shifted by one: cov = var = 1.25, mean gap 1 -> 2*1.25 / (1.25 + 1.25 + 1) = 5/7.
    assert ccc(x, [2.0, 3.0, 4.0, 5.0]) == pytest.approx(5 / 7)
    assert ccc(x, [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert pearson(x, [2.0, 3.0, 4.0, 5.0]) == pytest.approx(1.0)
    assert pearson(x, [1.0, 1.0, 1.0, 1.0]) is None  # constant prediction: undefined
    rng = np.random.default_rng(0)
    a, b = rng.random(50), rng.random(50)
    assert pearson(a, b) == pytest.approx(pearsonr(a, b).statistic)
    # CCC <= |Pearson| always; equal when means and variances agree.
    assert abs(ccc(a, b)) <= abs(pearson(a, b)) + 1e-12


def test_vad_metrics_rmse():
    gold = [(0.5, 0.5, 0.5), (1.0, 0.0, 0.5)]
    pred = [(0.5, 0.5, 0.5), (0.0, 0.0, 0.5)]
    m = vad_metrics(gold, pred)
    rmse = math.sqrt(1.0 / 6)  # one error of 1 among six values
    assert m["rmse"] == pytest.approx(rmse, abs=1e-4) and m["one_minus_rmse"] == pytest.approx(1 - rmse, abs=1e-4)
    assert m["pearson"]["d"] is None and m["ccc"]["v"] is not None  # d is constant


def test_polarity_sensitivity():
    def row(i, gv, pv, flip_of=None, ok=True):
        r = {"id": i, "gold_vad": {"v": gv, "a": 0.5, "d": 0.5}, "parse_ok": ok,
             "vad": {"v": pv, "a": 0.5, "d": 0.5} if ok else None}
        if flip_of:
            r["flip_of"] = flip_of
        return r

    rows = [
        row("s1", 0.8, 0.7), row("f1", 0.2, 0.3, "s1"),  # right direction
        row("s2", 0.2, 0.4), row("f2", 0.8, 0.3, "s2"),  # wrong direction
        row("s3", 0.3, 0.3), row("f3", 0.7, 0.6, "s3", ok=False),  # failed parse
        row("s4", 0.5, 0.5), row("f4", 0.5, 0.9, "s4"),  # no gold direction
        row("f5", 0.9, 0.9, "missing"),  # source not evaluated
    ]
    ok = polarity_sensitivity(rows, ok_only=True)
    assert ok == {"pairs": 2, "sensitivity": 0.5, "pairs_without_direction": 1}
    strict = polarity_sensitivity(rows, ok_only=False)
    assert strict["pairs"] == 3 and strict["sensitivity"] == pytest.approx(1 / 3, abs=1e-4)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = random.Random(3)
    labels = list(GOEMOTIONS)[:8]
    gold = [[rng.choice(labels)] for _ in range(80)]
    pred = [[g[0]] if rng.random() < 0.6 else [rng.choice(labels)] for g in gold]
    ci = bootstrap_macro_f1(gold, pred, GOEMOTIONS, n=500, seed=7)
    assert ci == bootstrap_macro_f1(gold, pred, GOEMOTIONS, n=500, seed=7)
    assert ci != bootstrap_macro_f1(gold, pred, GOEMOTIONS, n=500, seed=8)
    point = label_metrics(gold, pred, GOEMOTIONS)["macro_f1"]
    assert ci[0] < point < ci[1] and ci[1] - ci[0] < 0.5


def test_compute_metrics_ok_only_vs_all_rows_and_ekman():
    def row(i, gold, pred, ok=True, vad=(0.5, 0.5, 0.5)):
        return {"id": i, "corpus": "goemotions", "split": "dev", "taxonomy": "goemotions", "parse_ok": ok,
                "labels": pred if ok else None, "vad": dict(zip("vad", vad)) if ok else None,
                "error": None if ok else "unbalanced", "gold_labels": gold, "gold_vad": {"v": 0.5, "a": 0.5, "d": 0.5}}

    rows = [row("1", ["joy"], ["joy"]), row("2", ["anger"], ["annoyance"]), row("3", ["fear"], None, ok=False)]
    m = compute_metrics(rows, bootstrap=50)
    assert set(m["groups"]) == {"goemotions/dev"}
    a = m["all"]
    assert a["parse_ok_rate"] == pytest.approx(2 / 3, abs=1e-4) and a["parse_errors"] == {"unbalanced": 1}
    assert a["ok_only"]["labels"]["n"] == 2 and a["all_rows"]["labels"]["n"] == 3
    # joy right; anger -> annoyance wrong in GoEmotions but both are Ekman "anger".
    assert a["ok_only"]["labels"]["micro_f1"] == pytest.approx(0.5)
    assert a["ok_only"]["labels"]["ekman_macro_f1"] == 1.0
    assert a["all_rows"]["labels"]["ekman_macro_f1"] < 1.0
    assert a["ok_only"]["vad"]["one_minus_rmse"] == 1.0
    assert a["all_rows"]["vad"]["n"] == 3 and a["all_rows"]["vad"]["one_minus_rmse"] == 1.0  # midpoint imputed
