"""The synthetic corpus (`emoloom.data.synthetic`): determinism, label coverage, formats that the
real readers accept, short sentences, consistent negation and valence."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from emoloom.data import load_corpus, synthetic_records, write_synthetic
from emoloom.data.synthetic import MAX_WORDS, SPLITS, TOPICS, valence
from emoloom.labels import DAILYDIALOG, EMPATHETIC, GOEMOTIONS, TAXONOMIES

REPO = Path(__file__).resolve().parents[1]
SIZE = 300


def _bytes(files: dict[str, Path]) -> dict[str, bytes]:
    return {key: path.read_bytes() for key, path in files.items()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, seed=0, size=SIZE)
    return out


@pytest.fixture(scope="module")
def loaded(synth):
    return {(tax, split): load_corpus("synthetic", synth, split, taxonomy=tax, strict=True)
            for tax, splits in SPLITS.items() for split in splits}


def test_same_seed_identical_bytes_other_seed_differs(tmp_path):
    a = write_synthetic(tmp_path / "a", seed=7, size=120)
    b = write_synthetic(tmp_path / "b", seed=7, size=120)
    c = write_synthetic(tmp_path / "c", seed=8, size=120)
    assert list(a) == list(b) == list(c)
    assert _bytes(a) == _bytes(b)
    assert all(_bytes(a)[k] != _bytes(c)[k] for k in a)
    # The file set: original formats of the three corpora, train + dev splits.
    rel = sorted(str(p.relative_to(tmp_path / "a")) for p in a.values())
    assert rel == sorted([
        "goemotions/train.tsv", "goemotions/dev.tsv", "empathetic/train.csv", "empathetic/valid.csv",
        *(f"dailydialog/{s}/dialogues{k}_{s}.txt" for s in ("train", "validation") for k in ("", "_emotion", "_act")),
    ])


def test_every_label_occurs_via_real_readers(loaded):
    for (tax, split), res in loaded.items():
        assert res.skipped == [], (tax, split)
        assert all(r.corpus == "synthetic" and r.taxonomy == tax and r.split == split for r in res.records)
        counts = Counter(l for r in res.records for l in r.labels)
        missing = set(TAXONOMIES[tax]) - set(counts)
        assert not missing, f"{tax}/{split}: labels never generated: {sorted(missing)}"
    assert len(loaded["goemotions", "train"].records) == SIZE
    assert len(loaded["empathetic", "valid"].records) == max(SIZE // 5, len(EMPATHETIC))
    assert len(loaded["dailydialog", "train"].records) >= SIZE


def test_formats_are_the_originals(synth):
    rows = list(csv.reader((synth / "goemotions" / "train.tsv").open(encoding="utf-8", newline=""), delimiter="\t"))
    assert all(len(r) == 3 and all(0 <= int(i) < 28 for i in r[1].split(",")) for r in rows)
    assert any("," in r[1] for r in rows)  # some multi-label rows
    with (synth / "empathetic" / "valid.csv").open(encoding="utf-8", newline="") as f:
        assert f.readline() == "text,aug_text,label\n"
    dd = synth / "dailydialog" / "validation"
    dia = (dd / "dialogues_validation.txt").read_text(encoding="utf-8").splitlines()
    emo = (dd / "dialogues_emotion_validation.txt").read_text(encoding="utf-8").splitlines()
    assert len(dia) == len(emo) > 0
    for d, e in zip(dia, emo):
        assert d.endswith(" __eou__") and d.count("__eou__") == len(e.split())


def test_short_sentences_and_small_vocabulary(loaded):
    words = set()
    for res in loaded.values():
        for r in res.records:
            n = len(r.text.split())
            assert 2 <= n <= MAX_WORDS, r.text
            assert "\t" not in r.text and "\n" not in r.text
            words.update(r.text.split())
    assert len(words) < 1000  # a ~1-2k BPE vocabulary covers it


def test_negation_is_labelled_consistently(loaded):
    expect = {"goemotions": ("disappointment", "relief"), "empathetic": ("disappointed", "content"),
              "dailydialog": ("sadness", "happiness")}
    for (tax, _), res in loaded.items():
        not_pos, not_neg = expect[tax]
        negated = [r for r in res.records if " not happy " in f" {r.text} " or " not worried " in f" {r.text} "]
        assert negated, tax
        for r in negated:
            want = not_pos if " not happy " in f" {r.text} " else not_neg
            assert want in r.labels, (tax, r.text, r.labels)
        # The unnegated cue keeps its own label.
        happy = [r for r in res.records if "so happy" in r.text and " not " not in f" {r.text} "]
        assert all(not_pos not in r.labels for r in happy)


def test_valence_consistent_context(loaded):
    pos_topics, neg_topics = set(TOPICS["pos"]), set(TOPICS["neg"])
    for r in loaded["goemotions", "train"].records:
        if len(r.labels) != 1 or " not " in f" {r.text} ":
            continue
        v = valence(r.labels[0])
        wrong = neg_topics if v == "pos" else pos_topics if v == "neg" else set()
        assert not any(t in r.text for t in wrong), (r.labels, r.text)
    # DailyDialog: the emotional turns of a dialogue share one valence.
    by_dialogue: dict[int, set[str]] = {}
    for r in loaded["dailydialog", "train"].records:
        if r.labels != ["neutral"]:
            by_dialogue.setdefault(r.meta["dialogue"], set()).add(valence(r.labels[0]))
    assert by_dialogue and all(len(v) == 1 for v in by_dialogue.values())


def test_default_size_is_fast(tmp_path):
    t0 = time.perf_counter()
    files = write_synthetic(tmp_path)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"default synthetic generation took {elapsed:.2f}s"
    assert len(files) == 10


def test_synthetic_records_in_memory():
    for tax, labels in (("goemotions", GOEMOTIONS), ("empathetic", EMPATHETIC), ("dailydialog", DAILYDIALOG)):
        recs = synthetic_records(tax, 100, seed=3)
        assert len(recs) == 100 and recs == synthetic_records(tax, 100, seed=3)
        assert {l for r in recs for l in r.labels} == set(labels)
        assert len({r.id for r in recs}) == 100
    with pytest.raises(ValueError):
        synthetic_records("ekman", 10)


def test_no_real_text(shared_data, loaded):
    real = shared_data / "goemotions" / "dev.tsv"
    if not real.exists():
        pytest.skip("goemotions/dev.tsv not in shared data")
    real_texts = {r.text.strip().lower() for r in load_corpus("goemotions", real, "dev").records}
    synth_texts = {r.text for res in loaded.values() for r in res.records}
    assert not (real_texts & synth_texts)


@pytest.mark.skipif(not (REPO / "emoloom" / "__main__.py").exists(), reason="emoloom/__main__.py not written yet")
def test_cli_synth_then_stats(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = tmp_path / "syn"
    proc = subprocess.run([sys.executable, "-m", "emoloom", "data", "synth", "--out", str(out), "--seed", "1",
                           "--size", "200"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert Path(json.loads(proc.stdout)["dailydialog/validation/emotion"]).is_file()
    proc = subprocess.run([sys.executable, "-m", "emoloom", "data", "stats", "--corpus", "synthetic", "--source",
                           str(out), "--taxonomy", "dailydialog", "--split", "validation"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["corpus"] == "synthetic" and stats["taxonomy"] == "dailydialog" and stats["skipped"] == 0
    assert all(stats["labels"][l] > 0 for l in DAILYDIALOG)
    assert len(stats["sha256"]) == 2
