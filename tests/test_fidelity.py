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


def test_an_unknown_rung_signal_is_rejected_with_a_suggestion(tmp_path):
    from emoloom.config import ConfigError
    from emoloom.screen.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text("asha: {signal: nl}\n")
    with pytest.raises(ConfigError, match="did you mean 'nll'"):
        load_space(path)


def test_label_nll_is_the_models_own_loss_on_the_label_tokens():
    import torch

    from emoloom.contract import Record
    from emoloom.models import load_base
    from emoloom.screen.signals import label_nll, label_part
    from emoloom.models import ModelSpec, prompt_ids
    from emoloom.train.examples import target_text

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


# -- a screen and its audit, end to end (slow) -----------------------------------------------------

KNOWN = """
metric: objective
mode: max
num_trials: 2
max_concurrent: 2
seed: 0
asha: {enabled: true, time_attr: epoch, max_t: 2, grace_period: 1, reduction_factor: 2, signal: nll}
fixed: {epochs: 2, steps_per_epoch: 60, data.synthetic_size: 300, data.dev_size: 16}
params:
  model.name: {type: categorical, choices: [tiny-llama]}
  optim.lr: {type: categorical, choices: [0.0, 0.006]}
baselines:  # a working candidate and an untrained control: the ranking is known
  - {model.name: tiny-llama, optim.lr: 0.006}
  - {model.name: tiny-llama, optim.lr: 0.0}
"""


def _journals(tmp_path, pattern):
    out = []
    for p in (tmp_path / "runs").glob(pattern):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):  # being replaced right now
            pass
    return out


@pytest.mark.slow
@pytest.mark.timeout(1500)  # a screen, its audit, a kill and the resume: about 4 min idle, far more under load
def test_an_audit_killed_with_its_driver_resumes_and_finds_the_known_ranking(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(KNOWN)
    cmd = [sys.executable, "-m", "emoloom.screen", f"space={space}", f"storage={tmp_path / 'runs'}", "name=t",
           "eval.dev_limit=40", "eval.epoch_limit=8", "eval.max_new_tokens=64", "eval.cross_corpus=[]",
           "ray.num_cpus=2", "mlflow.registered_model=null", "fidelity={top: 1, random: 1, budget_x: 1.5, max_concurrent: 1}"]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    audit_glob = "t-*/fidelity/*/trials/trial_*/journal.json"
    deadline = time.time() + 900
    try:  # kill the screen's driver once one audit trial is done and the other is training
        while time.time() < deadline and driver.poll() is None:
            time.sleep(0.5)
            states = _journals(tmp_path, audit_glob)
            if (any(s["view"]["status"] == "FINISHED" for s in states)
                    and any(s["view"]["status"] == "RUNNING" and s["run_id"] for s in states)):
                break
        else:
            pytest.fail(f"no moment with one audit trial done and one in flight (driver rc {driver.poll()})")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    done_before = {s["run_id"]: len(s["ops"]) for s in _journals(tmp_path, audit_glob)
                   if s["view"]["status"] == "FINISHED"}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already finished" in again.stderr and "resuming the fidelity audit" in again.stderr
    assert "Fidelity audit: At 1.5x the screen's training budget (epochs 2 -> 3" in again.stdout

    c = tracking.client(tracking.default_tracking_uri(tmp_path / "runs"))
    exp = c.get_experiment_by_name("emoloom-screen")
    runs = c.search_runs([exp.experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "screen")
    trials = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "trial"]
    audits = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "fidelity" and r.info.status == "FINISHED"]
    # each chosen trial retrained once, under the screen's run; the finished one was not retrained
    assert sorted(r.data.tags["emoloom.fidelity_of"] for r in audits) == sorted(
        r.data.tags[tracking.TRIAL_TAG] for r in trials)
    assert all(r.data.tags[tracking.PARENT_TAG] == parent.info.run_id for r in audits)
    assert all(r.data.params["epochs"] == "3" for r in audits)
    for s in _journals(tmp_path, audit_glob):
        if s["run_id"] in done_before:
            assert len(s["ops"]) == done_before[s["run_id"]], "a finished audit trial was touched again"

    # the known ranking: the working learning rate first at both budgets
    m = parent.data.metrics
    assert m["fidelity.kendall_tau"] == 1.0 and m["fidelity.spearman"] == 1.0
    assert m["fidelity.top1_agreement"] == 1.0 and m["fidelity.regret"] == 0.0
    assert m["fidelity.n_trials"] == 2 and "fidelity.rung.nll.epoch1.spearman" in m
    assert {f.path for f in c.list_artifacts(parent.info.run_id, "fidelity")} >= {
        "fidelity/fidelity.png", "fidelity/fidelity.json", "fidelity/fidelity.md"}
    assert "the screen's pick" in parent.data.tags["emoloom.fidelity"]

    # every rung signal logged at every epoch a trial ran; ASHA got the chosen one (nll, negated)
    for run in trials:
        history = {k: {h.step: h.value for h in c.get_metric_history(run.info.run_id, k)}
                   for k in ("rung.decoded", "rung.nll", "rung.head_f1", "rung_value")}
        epochs = sorted(history["rung.nll"])
        assert epochs[0] == 1 and all(sorted(history[k]) == epochs for k in history), history
        assert all(history["rung_value"][e] == pytest.approx(-history["rung.nll"][e]) for e in epochs)
    # the leaderboard rebuilt from MLflow holds the screen's trials, not the audit's retraining
    from emoloom.screen.verdict import mlflow_report

    rows = mlflow_report(c, exp.experiment_id, parent, tmp_path / "report")["rows"]
    assert sorted(r["role"] for r in rows if r["role"] != "floor") == ["trial", "trial"]
