"""Cost ledger: per-trial resource-seconds, sums, evaluation share, early-stopping estimate."""
from __future__ import annotations

import pytest

from emoloom.screen.ledger import cost_ledger

TRIALS = {
    # finished: 3 epochs of (10 s train + 2 s epoch eval), then a 6 s final evaluation
    "a": {"train_s": 30.0, "epoch_eval_s": 6.0, "final_eval_s": 6.0, "cpus": 2, "gpus": 0, "epochs_done": 3,
          "finished": True},
    # finished on a GPU, 14 s per epoch
    "b": {"train_s": 36.0, "epoch_eval_s": 6.0, "final_eval_s": 4.0, "cpus": 1, "gpus": 0.5, "epochs_done": 3,
          "finished": True},
    # stopped by ASHA after one epoch: no final evaluation
    "c": {"train_s": 11.0, "epoch_eval_s": 2.0, "final_eval_s": 0.0, "cpus": 2, "gpus": 0, "epochs_done": 1,
          "finished": False},
}


def test_ledger_sums_match():
    led = cost_ledger(TRIALS, max_t=3)
    assert led["trials"]["a"] == {"wall_s": 42.0, "cpu_s": 84.0, "gpu_s": 0.0, "eval_s": 12.0, "eval_cpu_s": 24.0,
                                  "eval_gpu_s": 0.0, "epochs_done": 3, "finished": True}
    assert led["trials"]["b"]["gpu_s"] == 23.0 and led["trials"]["c"]["cpu_s"] == 26.0
    per = led["trials"].values()
    for key in ("wall_s", "cpu_s", "gpu_s", "eval_cpu_s", "eval_gpu_s"):
        assert led["totals"][key] == pytest.approx(sum(p[key] for p in per))
    assert led["totals"]["cpu_s"] == 84 + 46 + 26
    assert led["totals"]["train_cpu_s"] + led["totals"]["eval_cpu_s"] == pytest.approx(led["totals"]["cpu_s"])
    assert led["totals"]["trials"] == 3 and led["totals"]["finished"] == 2
    assert led["eval_share"]["cpu"] == pytest.approx((24 + 10 + 4) / 156, abs=1e-4)
    assert led["eval_share"]["wall"] == pytest.approx((12 + 10 + 2) / (42 + 46 + 13), abs=1e-4)
    assert led["eval_share"]["gpu"] == pytest.approx(10 / 46, abs=1e-4)


def test_early_stopping_estimate():
    led = cost_ledger(TRIALS, max_t=3)["early_stopping"]
    epoch_s = (36 / 3 + 42 / 3) / 2  # mean per-epoch wall time of the finished trials: 13 s
    final_s = (6 + 4) / 2
    extra_c = 2 * epoch_s + final_s  # trial c: two more epochs and the final evaluation it skipped
    assert led["estimable"] is True and led["basis_trials"] == 2
    assert led["epoch_s"] == epoch_s and led["final_eval_s"] == final_s
    assert led["saved_cpu_s"] == pytest.approx(extra_c * 2)
    assert led["cpu_s_at_max_t"] == pytest.approx(156 + extra_c * 2)
    assert led["saved_gpu_s"] == 0.0
    assert led["saved_share"] == pytest.approx(extra_c * 2 / (156 + extra_c * 2), abs=1e-4)


def test_no_finished_trial_means_no_estimate_and_bad_input_fails():
    led = cost_ledger({"c": TRIALS["c"]}, max_t=3)
    assert led["early_stopping"]["estimable"] is False and led["early_stopping"]["saved_cpu_s"] is None
    assert led["totals"]["cpu_s"] == 26.0
    empty = cost_ledger({}, max_t=2)
    assert empty["totals"]["cpu_s"] == 0 and empty["eval_share"] == {"wall": None, "cpu": None, "gpu": None}
    with pytest.raises(ValueError, match="lacks cpus"):
        cost_ledger({"x": {k: v for k, v in TRIALS["a"].items() if k != "cpus"}}, max_t=3)
    with pytest.raises(ValueError, match="negative"):
        cost_ledger({"x": {**TRIALS["a"], "train_s": -1}}, max_t=3)
    with pytest.raises(ValueError, match="max_t"):
        cost_ledger(TRIALS, max_t=0)
