"""Evaluation sample: stratified, seeded, deterministic; manifest and coverage warnings; full dev."""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from emoloom.contract import Record
from emoloom.data import load_corpus, synthetic_records
from emoloom.labels import GOEMOTIONS
from emoloom.screen.sample import evaluation_sample, label_coverage_warnings, load_full_dev, sample_manifest


RARE = ("pride", "relief", "nervousness", "embarrassment")


def _skewed(n: int = 600, seed: int = 0) -> list[Record]:
    """Single- and multi-label rows with a long tail. 'grief' (4 rows) only ever sits next to a
    rarer label (each of RARE has 3 rows, one of them with grief): no row is in grief's stratum,
    so a small sample misses grief unless the repair pass brings it in."""
    rng = random.Random(seed)
    labels = [l for l in GOEMOTIONS if l not in ("grief",) + RARE]
    weights = [1 / (i + 1) for i in range(len(labels))]
    out = []
    for i in range(n):
        labs = rng.choices(labels, weights)
        if rng.random() < 0.15:
            labs = list(dict.fromkeys(labs + rng.choices(labels, weights)))
        out.append(Record(id=f"s{i}", text=f"text {i}", corpus="synthetic", taxonomy="goemotions", split="dev",
                          labels=labs))
    for label in RARE:
        for j in range(3):
            out.append(Record(id=f"{label}{j}", text=f"{label} {j}", corpus="synthetic", taxonomy="goemotions",
                              split="dev", labels=[label, "grief"] if j == 0 else [label]))
    rng.shuffle(out)
    return out


def test_every_label_is_represented_and_proportions_follow_the_pool():
    pool = _skewed()
    labels_in_pool = {l for r in pool for l in r.labels}
    for n in (len(labels_in_pool), 40, 120):
        for seed in range(10):  # without the repair pass, grief is missed in about 1 of 5 draws
            sample = evaluation_sample(pool, n, seed=seed)
            assert len(sample) == n and len({r.id for r in sample}) == n
            assert {l for r in sample for l in r.labels} == labels_in_pool, (n, seed)
    sample = evaluation_sample(pool, 300, seed=0)
    pool_freq, freq = Counter(l for r in pool for l in r.labels), Counter(l for r in sample for l in r.labels)
    top = pool_freq.most_common(1)[0][0]
    assert freq[top] / 300 == pytest.approx(pool_freq[top] / len(pool), abs=0.05)


def test_deterministic_seeded_and_order_free():
    pool = _skewed()
    a = [r.id for r in evaluation_sample(pool, 100, seed=3)]
    assert a == [r.id for r in evaluation_sample(pool, 100, seed=3)]
    assert a != [r.id for r in evaluation_sample(pool, 100, seed=4)]
    assert a == [r.id for r in pool if r.id in set(a)]  # returned in input order
    reordered = sorted(pool, key=lambda r: r.id)
    assert sorted(a) == sorted(r.id for r in evaluation_sample(reordered, 100, seed=3))


def test_small_and_large_n():
    pool = _skewed(50)
    assert evaluation_sample(pool, len(pool), 0) == pool
    assert evaluation_sample(pool, 10_000, 0) == pool
    assert evaluation_sample(pool, 0, 0) == []
    assert len(evaluation_sample(pool, 5, 0)) == 5
    with pytest.raises(ValueError, match="n must be"):
        evaluation_sample(pool, -1, 0)
    with pytest.raises(ValueError, match="more than once"):
        evaluation_sample(pool + pool[:1], 3, 0)


def test_sources_get_even_shares():
    go = synthetic_records("goemotions", 300, seed=0, split="dev")
    dd = synthetic_records("dailydialog", 40, seed=0, split="dev")
    sample = evaluation_sample(go + dd, 100, seed=0)
    counts = Counter(r.taxonomy for r in sample)
    assert counts == {"goemotions": 60, "dailydialog": 40}  # the small source's unused share moves over
    assert {l for r in sample if r.taxonomy == "dailydialog" for l in r.labels} == {l for r in dd for l in r.labels}


def test_manifest_and_warnings():
    pool = _skewed()
    sample = evaluation_sample(pool, 60, seed=0)
    m = sample_manifest(sample)
    assert set(m) == {"n", "ids", "ids_sha256", "sha256", "label_counts", "sources"}
    assert m["n"] == 60 and m["ids"] == [r.id for r in sample]
    assert m == sample_manifest(evaluation_sample(pool, 60, seed=0))
    assert set(m["label_counts"]["goemotions"]) == set(GOEMOTIONS)
    assert sum(m["label_counts"]["goemotions"].values()) == sum(len(r.labels) for r in sample)
    assert m["sources"] == {"synthetic/goemotions": 60}
    relabelled = [r.model_copy(update={"labels": ["joy"]}) if i == 0 else r for i, r in enumerate(sample)]
    other = sample_manifest(relabelled)
    assert other["ids_sha256"] == m["ids_sha256"] and other["sha256"] != m["sha256"]

    warnings = label_coverage_warnings({"goemotions": {"joy": 5, "grief": 1, "pride": 0}}, min_rows=3)
    assert warnings == [
        "goemotions/grief: only 1 row in the evaluation sample (< 3); its F1, and so Macro-F1, moves in big steps",
        "goemotions/pride: no rows in the evaluation sample; left out of Macro-F1",
    ]
    assert label_coverage_warnings({"goemotions": {"joy": 5}}, min_rows=6)[0].startswith("goemotions/joy: only 5 rows")


def test_full_dev_is_what_training_reads(tmp_path: Path):
    """The default screen's training config: prepare_data's dev set is a subset of the full dev,
    record for record (same ids, text, labels, lexicon-weak VAD)."""
    from emoloom.config import load_config
    from emoloom.screen.defaults import DEFAULT_SCREEN
    from emoloom.train.config import TrainConfig
    from emoloom.train.examples import prepare_data

    cfg = load_config(TrainConfig, None, [], base={**DEFAULT_SCREEN["train"], "out": str(tmp_path), "seed": 0})
    dev, files = load_full_dev(cfg)
    prepared = prepare_data(cfg)
    assert len(dev) > len(prepared.dev) > 0
    assert files and set(files) <= set(prepared.stats["sha256"])
    by_id = {r.id: r for r in dev}
    for r in prepared.dev:
        assert by_id[r.id] == r
    assert all(r.vad is not None and r.labels for r in dev)
    sample = evaluation_sample(dev, 100, seed=0)
    assert not label_coverage_warnings(sample_manifest(sample)["label_counts"], min_rows=1)


def test_goemotions_dev_sample_covers_all_labels(shared_data: Path):
    res = load_corpus("goemotions", shared_data / "goemotions", "dev")
    dev = [r for r in res.records if r.labels]
    sample = evaluation_sample(dev, 100, seed=0)
    m = sample_manifest(sample)
    assert m["n"] == 100
    assert min(m["label_counts"]["goemotions"].values()) >= 1  # grief has 13 of 5,426 dev rows
