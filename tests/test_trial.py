"""Pieces of a screen's trial that decide its fate: what it is ranked by, and its time limit."""
import threading

import pytest

from emoloom import tracking
from emoloom.config import ConfigError, load_config
from emoloom.journal import JOURNAL, RunJournal
from emoloom.screen.space import SearchSpace
from emoloom.screen.trial import objective_of, start_watchdog

SUMMARY = {"dev.macro_f1": 0.5, "dev.macro_f1_strict": 0.4, "dev.parse_ok_rate": 0.9,
           "dev.vad_1mrmse": float("nan"), "epoch_dev.macro_f1_strict": 0.2}


def test_the_space_metric_is_what_the_objective_holds():
    assert objective_of(SUMMARY) == 0.4  # default: Macro-F1 with parse failures as wrong
    assert objective_of(SUMMARY, "dev", "macro_f1") == 0.5
    assert objective_of(SUMMARY, "dev", "parse_ok_rate") == 0.9
    assert objective_of(SUMMARY, "epoch_dev") == 0.2  # the rung value reads the epoch sample
    assert objective_of(SUMMARY, "dev", "vad_1mrmse") == 0.0  # non-finite never ranks first


def test_a_metric_the_trial_does_not_produce_is_rejected(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("metric: dev_accuracy\n")
    with pytest.raises(ConfigError, match="metric"):
        load_config(SearchSpace, path, [])


def test_a_trial_past_its_time_limit_is_failed_with_the_reason(tmp_path):
    journal = RunJournal(tmp_path / JOURNAL, uri=tracking.default_tracking_uri(tmp_path), experiment_id="0",
                         run_name="trial_x", key_tags={tracking.TRIAL_TAG: "x"}, autosync=False)
    exited = threading.Event()
    start_watchdog(0.2, journal, exit=lambda code: exited.set())
    assert exited.wait(10)
    again = RunJournal.load(tmp_path / JOURNAL, autosync=False)
    assert again.status == "FAILED"
    assert again.view["tags"]["emoloom.failure"] == "timed out after 0.2 s (trial_timeout_s)"


def test_a_trial_within_its_time_limit_is_left_alone(tmp_path):
    journal = RunJournal(tmp_path / JOURNAL, uri=tracking.default_tracking_uri(tmp_path), experiment_id="0",
                         run_name="trial_y", key_tags={tracking.TRIAL_TAG: "y"}, autosync=False)
    exited = threading.Event()
    start_watchdog(0.2, journal, exit=lambda code: exited.set()).cancel()
    assert not exited.wait(0.5) and journal.status == "RUNNING"
