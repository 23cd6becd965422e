"""Valence Flip: the pair table, lexicon-guided substitution, valence mirroring, provenance."""
from __future__ import annotations

import pytest

from emoloom.augment import (MIRRORS, NEGATIVE_CUES, POSITIVE_CUES, CUE_SHIFT, flip_record, mirror_labels,
                             valence_flip)
from emoloom.contract import VAD, Record
from emoloom.labels import TAXONOMIES, VAD_ANCHORS
from emoloom.lexicon import load_lexicon, with_weak_vad


@pytest.fixture(scope="module")
def lexicon():
    return load_lexicon(None)


def rec(text, labels, taxonomy="goemotions", vad=(0.9, 0.7, 0.6), id="r1"):
    return Record(id=id, text=text, labels=labels, taxonomy=taxonomy, vad=VAD(v=vad[0], a=vad[1], d=vad[2]),
                  vad_source="lexicon")


def test_pair_table_is_symmetric_and_mirrors_valence():
    for tax, table in MIRRORS.items():
        for label, mirror in table.items():
            assert label in TAXONOMIES[tax] and mirror in TAXONOMIES[tax]
            assert table[mirror] == label
            v1, v2 = VAD_ANCHORS[label][0], VAD_ANCHORS[mirror][0]
            assert (v1 - 0.5) * (v2 - 0.5) < 0, (tax, label, mirror)  # opposite sides of neutral
    assert MIRRORS["goemotions"]["joy"] == "sadness"
    assert MIRRORS["goemotions"]["admiration"] == "disapproval"
    assert "neutral" not in MIRRORS["goemotions"]


def test_word_map_agrees_with_the_builtin_lexicon(lexicon):
    for cues, side in ((POSITIVE_CUES, 1), (NEGATIVE_CUES, -1)):
        for word, replacement in cues.items():
            vad = lexicon.lookup(word)
            if vad is not None:
                assert (vad[0] - 0.5) * side >= CUE_SHIFT, word
            new = lexicon.lookup(replacement)
            if new is not None:
                assert (new[0] - 0.5) * side < 0, (word, replacement)


def test_flip_substitutes_cue_and_mirrors_valence(lexicon):
    src = rec("i am so happy about the wedding !", ["joy"], vad=(0.9, 0.7, 0.6))
    out = flip_record(src, lexicon)
    assert out.text == "i am so sad about the wedding !"
    assert out.labels == ["sadness"]
    assert out.vad.v == pytest.approx(0.1) and (out.vad.a, out.vad.d) == (0.7, 0.6)
    assert out.id == "r1#flip" and out.meta["flip_of"] == "r1"
    assert out.taxonomy == src.taxonomy and out.vad_source == src.vad_source
    assert src.text == "i am so happy about the wedding !"  # the source is not touched


def test_flip_negative_to_positive_and_negate_mode(lexicon):
    out = flip_record(rec("i am scared of the flood .", ["fear"], vad=(0.12, 0.8, 0.2)), lexicon)
    assert out.labels == ["relief"] and "relieved" in out.text and out.vad.v == pytest.approx(0.88)
    neg = flip_record(rec("i am so happy about the wedding !", ["joy"]), lexicon, mode="negate")
    assert neg.text == "i am so not happy about the wedding !"
    # the lexicon reads the negated cue with mirrored valence
    assert lexicon.matches(neg.text)[0].negated


@pytest.mark.parametrize("text,labels,taxonomy", [
    ("the meeting is on tuesday .", ["joy"], "goemotions"),          # no cue word: not confident
    ("i am not happy about the layoffs .", ["sadness"], "goemotions"),  # negated cue
    ("thanks for the gift , i am grateful .", ["gratitude"], "goemotions"),  # unmirrorable cue
    ("wow , i did not expect the gift !", ["surprise"], "goemotions"),  # label without a mirror
    ("i am so happy about the wedding !", ["joy", "surprise"], "goemotions"),  # one label without
])
def test_no_flip_when_not_confident(lexicon, text, labels, taxonomy):
    assert flip_record(rec(text, labels, taxonomy), lexicon) is None


def test_record_without_vad_is_not_flipped(lexicon):
    r = Record(id="x", text="i am so happy about the wedding !", labels=["joy"])
    assert flip_record(r, lexicon) is None


@pytest.mark.parametrize("taxonomy", ["goemotions", "empathetic", "dailydialog"])
def test_flips_of_synthetic_corpus_satisfy_the_table(lexicon, taxonomy):
    from emoloom.data import synthetic_records

    sources = [with_weak_vad(r, lexicon) for r in synthetic_records(taxonomy, 300, seed=2)]
    by_id = {r.id: r for r in sources}
    flips = valence_flip(sources, lexicon, rate=1.0, seed=0)
    assert len(flips) >= (10 if taxonomy == "dailydialog" else 50)  # DailyDialog: mostly neutral turns
    for f in flips:
        src = by_id[f.meta["flip_of"]]
        assert f.id == f"{src.id}#flip"
        assert f.labels == mirror_labels(taxonomy, src.labels)
        assert f.vad.v == pytest.approx(1 - src.vad.v, abs=1e-6)
        assert (f.vad.a, f.vad.d) == (src.vad.a, src.vad.d)
        assert f.text != src.text
    # the lexicon agrees the flip moved the text's valence the right way on average
    moved = []
    for f in flips:
        src = by_id[f.meta["flip_of"]]
        before, after = lexicon.text_vad(src.text)[0], lexicon.text_vad(f.text)[0]
        if before is not None and after is not None:
            moved.append((after[0] - before[0]) * (1 if src.vad.v < 0.5 else -1))
    assert len(moved) > 0.8 * len(flips) and sum(moved) / len(moved) > 0.1


def test_rate_and_seed(lexicon):
    from emoloom.data import synthetic_records

    sources = [with_weak_vad(r, lexicon) for r in synthetic_records("goemotions", 400, seed=1)]
    full = valence_flip(sources, lexicon, rate=1.0, seed=0)
    part = valence_flip(sources, lexicon, rate=0.3, seed=0)
    assert valence_flip(sources, lexicon, rate=0.0) == []
    assert 0.15 * len(full) < len(part) < 0.45 * len(full)
    assert [r.id for r in part] == [r.id for r in valence_flip(sources, lexicon, rate=0.3, seed=0)]
    assert [r.id for r in part] != [r.id for r in valence_flip(sources, lexicon, rate=0.3, seed=1)]
    with pytest.raises(ValueError):
        valence_flip(sources, lexicon, rate=1.5)
