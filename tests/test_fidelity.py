"""The fidelity audit and the rung signals: statistics against scipy, what ASHA receives, the
label NLL against the model's own loss, and (slow) a screen whose audit is killed and resumed."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

from emoloom import tracking
from emoloom.screen.fidelity import (budget_overrides, rank_agreement, regret_bootstrap, screen_scores, select,
                                     signal_correlations)
from emoloom.screen.signals import SIGNALS, oriented, rung_report


def test_rank_agreement_matches_scipy():
    screen = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]  # minus the screen's ranks: trial 0 is its pick
    full = [0.40, 0.55, 0.30, 0.30, 0.10, 0.05]
    out = rank_agreement(screen, full, pick=0, seed=1)
    assert out["kendall_tau"] == pytest.approx(stats.kendalltau(screen, full).statistic, abs=1e-4)
    assert out["spearman"] == pytest.approx(stats.spearmanr(screen, full).statistic, abs=1e-4)
    assert out["top1_agreement"] == 0.0 and out["regret"] == pytest.approx(0.15)
    assert out["pick_full_rank"] == 2
    lo, hi = out["kendall_tau_ci95"]
    assert -1 <= lo <= out["kendall_tau"] <= hi <= 1
    # the screen's pick is also the full-budget best: agreement, no regret
    assert rank_agreement(screen, [0.9, *full[1:]], pick=0)["top1_agreement"] == 1.0
    assert rank_agreement(screen, [0.9, *full[1:]], pick=0)["regret"] == 0.0


def test_rank_agreement_on_a_constant_side_says_none():
    out = rank_agreement([2.0, 1.0, 0.0], [0.0, 0.0, 0.0], pick=0)
    assert out["kendall_tau"] is None and out["spearman"] is None
    assert out["top1_agreement"] == 1.0 and out["regret"] == 0.0  # a tie with the best counts as agreement


def _rows(correct: list[bool]) -> list[dict]:
    labels = ["joy", "anger", "fear", "sadness"]
    return [{"id": str(i), "taxonomy": "ekman", "gold_labels": [labels[i % 4]], "parse_ok": True,
             "labels": [labels[i % 4]] if ok else [labels[(i + 1) % 4]]} for i, ok in enumerate(correct)]


def test_regret_over_row_resamples():
    n = 40
    strong, weak = _rows([True] * n), _rows([i % 3 == 0 for i in range(n)])
    assert regret_bootstrap({"a": strong, "b": weak}, "a", replicates=200)["regret_ci95"] == [0.0, 0.0]
    out = regret_bootstrap({"a": strong, "b": weak}, "b", replicates=200)
    assert out["top1_share"] == 0.0 and out["regret_ci95"][0] > 0.3


def test_signal_correlations_per_signal_and_epoch():
    hist = {"a": {1: {"decoded": 0.1, "nll": 9.0, "head_f1": 0.2}, 2: {"decoded": 0.5, "nll": 5.0, "head_f1": 0.1}},
            "b": {1: {"decoded": 0.2, "nll": 8.0, "head_f1": 0.3}, 2: {"decoded": 0.3, "nll": 6.0, "head_f1": 0.3}},
            "c": {1: {"decoded": 0.0, "nll": 10.0, "head_f1": 0.1}}}  # stopped after epoch 1
    full = {"a": 0.6, "b": 0.4, "c": 0.1}
    cells = {(r["signal"], r["epoch"]): r for r in signal_correlations(hist, full, "max")}
    assert cells[("nll", 2)]["n"] == 2 and cells[("nll", 2)]["kendall_tau"] == 1.0  # lower NLL, better trial
    assert cells[("nll", 1)]["spearman"] == pytest.approx(stats.spearmanr([-9, -8, -10], [0.6, 0.4, 0.1]).statistic,
                                                          abs=1e-4)
    assert cells[("head_f1", 2)]["kendall_tau"] == -1.0
    tau = stats.kendalltau([0.1, 0.2, 0.0], [0.6, 0.4, 0.1]).statistic
    assert cells[("decoded", 1)]["kendall_tau"] == pytest.approx(tau, abs=1e-4)


def test_select_takes_the_top_finished_and_draws_the_rest_with_stopped_ones():
    rows = [{"trial": t, "role": "trial", "status": s, "objective": o, "rank": i + 1}
            for i, (t, s, o) in enumerate([("a", "FINISHED", 0.5), ("b", "FINISHED", 0.4), ("c", "FINISHED", 0.3),
                                           ("d", "STOPPED", 0.2), ("e", "STOPPED", 0.1), ("f", "FAILED", None)])]
    chosen = select(rows, top=2, others=3, seed=0)
    assert [c["trial"] for c in chosen[:2]] == ["a", "b"] and {c["why"] for c in chosen[2:]} == {"random"}
    assert {c["trial"] for c in chosen[2:]} == {"c", "d", "e"}  # never a failed trial
    assert select(rows, top=2, others=1, seed=0) == select(rows, top=2, others=1, seed=0)  # seeded
    # the screen's order keeps its ties: finished above stopped, equal objectives share a score
    assert screen_scores(rows[:5], 1.0) == [4, 3, 2, 1, 0]
    tied = [{**rows[0], "objective": 0.0}, {**rows[1], "objective": 0.0}, {**rows[3], "objective": 0.9}]
    assert screen_scores(tied, 1.0) == [1, 1, 0]
    assert budget_overrides({"epochs": 3, "max_steps": None}, 4) == {"epochs": 12}
    assert budget_overrides({"epochs": 3, "max_steps": 50}, 2.5) == {"max_steps": 125}


def test_the_chosen_rung_signal_is_what_asha_receives_and_decides_on():
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from emoloom.screen.run import _scheduler
    from emoloom.screen.space import SearchSpace

    # a decodes better after epoch 1; b has the lower label NLL and the better head
    measured = {"a": {"decoded": 0.30, "nll": 12.0, "head_f1": 0.10},
                "b": {"decoded": 0.10, "nll": 7.0, "head_f1": 0.40}}
    for choice, loser in (("decoded", "b"), ("nll", "a"), ("head_f1", "a")):
        space = SearchSpace(asha={"max_t": 2, "grace_period": 1, "reduction_factor": 2, "signal": choice})
        asha = _scheduler(space)
        trials = {}
        for name in ("a", "b"):
            trials[name] = Trial("run_trial", stub=True, trial_id=name)
            asha.on_trial_add(None, trials[name])
        reports = {n: {"epoch": 1, "objective": m["decoded"], **rung_report(m, choice, "max")}
                   for n, m in measured.items()}
        assert {k for k in reports["a"] if k.startswith("rung.")} == {f"rung.{s}" for s in SIGNALS}
        first = "b" if loser == "a" else "a"  # the better one reports first, then the other meets the cutoff
        assert asha.on_trial_result(None, trials[first], reports[first]) == TrialScheduler.CONTINUE
        assert asha.on_trial_result(None, trials[loser], reports[loser]) == TrialScheduler.STOP, choice
    assert oriented(7.0, "nll", "max") == -7.0 and oriented(7.0, "nll", "min") == 7.0
    assert oriented(0.4, "head_f1", "min") == -0.4 and oriented(0.3, "decoded", "min") == 0.3
    assert oriented(float("nan"), "nll", "max") == -math.inf


def test_label_nll_is_the_models_own_loss_on_the_label_tokens():
    import torch

    from emoloom.contract import Record
    from emoloom.models import load_base
    from emoloom.screen.signals import label_nll, label_part
    from emoloom.models import ModelSpec
    from emoloom.train.examples import prompt_ids, target_text

    loaded = load_base(ModelSpec(name="tiny-qwen2"))
    model, tok = loaded.model.eval(), loaded.tokenizer
    records = [Record(id="1", text="I finally passed the exam!", taxonomy="ekman", labels=["joy"]),
               Record(id="2", text="Leave me alone.", taxonomy="ekman", labels=["anger", "disgust"])]
    expected = []
    for r in records:  # one row at a time, through the model's own causal-LM loss
        target = target_text(r, "")
        enc = tok(target, add_special_tokens=False, return_offsets_mapping=True)
        k = sum(1 for s, _ in enc["offset_mapping"] if s < label_part(target))
        p = prompt_ids(tok, r)
        ids = torch.tensor([p + list(enc["input_ids"])[:k]])
        labels = ids.clone()
        labels[0, :len(p)] = -100
        with torch.no_grad():
            expected.append(float(model(input_ids=ids, labels=labels).loss) * k)
    got = label_nll(model, tok, records, batch_size=2)  # batched, padded
    assert got == pytest.approx(sum(expected) / len(expected), rel=1e-4)
