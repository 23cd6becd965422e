"""Floor baselines: rows like a model's, scored by the metrics code, cached, TF-IDF above majority."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emoloom.contract import parse_output
from emoloom.data import load_corpus, synthetic_records
from emoloom.data.base import project
from emoloom.eval.metrics import compute_metrics
from emoloom.eval.paired import paired_bootstrap
from emoloom.lexicon import load_lexicon, with_weak_vad
from emoloom.screen import floors as floors_mod
from emoloom.screen.floors import FLOORS, compute_floors, mean_vad

ROW_FIELDS = {"id", "corpus", "split", "taxonomy", "prompt_sha256", "truncated", "raw", "parse_ok", "labels", "vad",
              "rationale", "error", "detail", "stop", "new_tokens", "forwards", "gold_labels", "gold_vad",
              "gold_vad_source"}


def _weak(records):
    lexicon = load_lexicon(None)
    return [with_weak_vad(r, lexicon) for r in records]


@pytest.fixture(scope="module")
def synthetic():
    train = _weak(synthetic_records("goemotions", 600, seed=0, split="train"))
    dev = _weak(synthetic_records("goemotions", 120, seed=0, split="dev"))
    # Cross-corpus rows as screen.sample.cross_corpus_records builds them: Ekman-projected, asked with
    # the training taxonomy (GoEmotions contains the Ekman names).
    dd = project(_weak(synthetic_records("dailydialog", 80, seed=0, split="validation")), "ekman")
    cross = [r.model_copy(update={"taxonomy": "goemotions"}) for r in dd]
    return train, {"dev": dev, "cross/dailydialog": cross}


def _strict(metrics: dict) -> float:
    return metrics["all"]["all_rows"]["labels"]["macro_f1"]


def test_floors_are_scored_by_the_metrics_code_and_tfidf_beats_majority(synthetic, tmp_path: Path):
    train, evals = synthetic
    out = compute_floors(train, evals, tmp_path, bootstrap=50)
    assert set(out["floors"]) == set(FLOORS) and out["cached"] is False
    for name in FLOORS:
        for ev, recs in evals.items():
            block = out["floors"][name][ev]
            assert [r["id"] for r in block["rows"]] == [r.id for r in recs]
            assert all(ROW_FIELDS <= set(r) and r["parse_ok"] for r in block["rows"])
            assert block["metrics"] == compute_metrics(block["rows"], bootstrap=50, seed=0)
            row = block["rows"][0]  # raw is a contract answer that parses back to the row
            assert parse_output(row["raw"], row["taxonomy"]).row()["labels"] == row["labels"]
    dev = out["floors"]
    assert _strict(dev["tfidf_lr"]["dev"]["metrics"]) > _strict(dev["majority"]["dev"]["metrics"]) + 0.3
    assert len({tuple(r["labels"]) for r in dev["majority"]["dev"]["rows"]}) == 1
    # Cross-corpus rows get the Ekman-projected F1 exactly as a model's rows do.
    cross = {n: dev[n]["cross/dailydialog"]["metrics"]["all"]["all_rows"]["labels"]["ekman_macro_f1"] for n in FLOORS}
    assert cross["tfidf_lr"] > cross["majority"]
    # Every floor answers the training mean VAD.
    want = np.mean([r.vad.as_tuple() for r in train], axis=0)
    assert out["mean_vad"] == pytest.approx(dict(zip("vad", want)), abs=0.006)
    assert mean_vad(train).model_dump() == out["mean_vad"]
    assert {tuple(r["vad"].values()) for r in dev["tfidf_lr"]["dev"]["rows"]} == {tuple(out["mean_vad"].values())}
    assert dev["tfidf_lr"]["dev"]["metrics"]["all"]["all_rows"]["vad"]["one_minus_rmse"] is not None
    # The paired bootstrap takes floor rows like any candidate's.
    stats = paired_bootstrap({n: dev[n]["dev"]["rows"] for n in FLOORS}, replicates=200)
    assert stats["leader"] == "tfidf_lr" and stats["tie_group"] == ["tfidf_lr"]
    fit = out["fit"]["tfidf_lr"]["per_taxonomy"]["goemotions"]
    assert fit["train_records"] == 600 and 0.05 <= fit["threshold"] <= 0.95


def test_floors_are_computed_once_then_read_from_cache(synthetic, tmp_path: Path, monkeypatch):
    train, evals = synthetic
    first = compute_floors(train, evals, tmp_path, bootstrap=0)
    assert first["cached"] is False and Path(first["path"]).is_file()
    assert json.loads(Path(first["path"]).read_text())["key"] == first["key"]

    def refit(*_a, **_k):
        raise AssertionError("floors were fit again despite the cache")

    monkeypatch.setattr(floors_mod, "_fit_predict", refit)
    again = compute_floors(train, evals, tmp_path, bootstrap=0)
    assert again["cached"] is True and again["floors"] == first["floors"] and again["key"] == first["key"]
    # Other evaluation rows or other training data: another key, so a fit.
    with pytest.raises(AssertionError, match="fit again"):
        compute_floors(train, {"dev": evals["dev"][:-1]}, tmp_path, bootstrap=0)
    with pytest.raises(AssertionError, match="fit again"):
        compute_floors(train[:-1], evals, tmp_path, bootstrap=0)


def test_ekman_rows_use_projected_training_data_and_unknown_taxonomies_fail(tmp_path: Path):
    train = _weak(synthetic_records("empathetic", 300, seed=0, split="train"))
    dd = project(_weak(synthetic_records("dailydialog", 40, seed=0, split="validation")), "ekman")
    out = compute_floors(train, {"cross": dd}, tmp_path, bootstrap=0)
    rows = out["floors"]["tfidf_lr"]["cross"]["rows"]
    assert {r["taxonomy"] for r in rows} == {"ekman"}
    assert out["fit"]["majority"]["per_taxonomy"]["ekman"]["train_records"] == 300
    with pytest.raises(ValueError, match="no training records of taxonomy 'goemotions'"):
        compute_floors(train, {"dev": synthetic_records("goemotions", 5, seed=0, split="dev")}, tmp_path)


def test_goemotions_subset(shared_data: Path, tmp_path: Path):
    """Real data, a subset: 4,000 training rows, 300 dev rows (the full run is in the report)."""
    train = [r for r in load_corpus("goemotions", shared_data / "goemotions", "train", limit=4000).records if r.labels]
    dev = [r for r in load_corpus("goemotions", shared_data / "goemotions", "dev", limit=300).records if r.labels]
    out = compute_floors(train, {"dev": dev}, tmp_path, bootstrap=0)
    f1 = {n: _strict(out["floors"][n]["dev"]["metrics"]) for n in FLOORS}
    assert f1["majority"] < 0.1 < 0.2 < f1["tfidf_lr"]
    assert out["mean_vad"] == {"v": 0.5, "a": 0.5, "d": 0.5}  # no VAD in the records given
