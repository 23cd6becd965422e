"""Lexicon loading (built-in, NRC-VAD, Warriner), negation, lemmas and the weak VAD target."""
from __future__ import annotations

import csv
import hashlib
import re

import pytest

from emoloom.contract import MAX_RATIONALE_WORDS, VAD, Record
from emoloom.labels import anchor
from emoloom.lexicon import (
    BUILTIN_PATH,
    Lexicon,
    lemma_candidates,
    load_lexicon,
    rationale_for,
    tokenize,
    weak_vad,
    with_weak_vad,
)

@pytest.fixture(scope="module")
def lex() -> Lexicon:
    return Lexicon.builtin()


def approx3(a, b, tol=1e-9):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


# --- built-in lexicon --------------------------------------------------------------------------


def test_builtin_size_range_and_metadata(lex):
    assert 400 <= len(lex) <= 600
    assert lex.name == "builtin"
    assert lex.sha256 == hashlib.sha256(BUILTIN_PATH.read_bytes()).hexdigest()
    for word, vad in lex.entries.items():
        assert word == word.lower() and word.strip() == word
        assert len(vad) == 3 and all(0.0 <= x <= 1.0 for x in vad), word


def test_builtin_file_layout():
    lines = BUILTIN_PATH.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#") and "EmoLoom" in lines[0]
    assert lines[1] == "word\tvalence\tarousal\tdominance"
    words = []
    for line in lines[2:]:
        word, *vals = line.split("\t")
        assert len(vals) == 3 and all(re.fullmatch(r"[01]\.\d\d", v) for v in vals), line
        words.append(word)
    assert len(words) == len(set(words)), "duplicate words"


def test_builtin_polarity_sanity(lex):
    for pos in ("happy", "love", "thanks", "awesome", "proud", "calm"):
        assert lex.lookup(pos)[0] > 0.7, pos
    for neg in ("furious", "grief", "scared", "hate", "disgusting", "lonely", "terrible"):
        assert lex.lookup(neg)[0] < 0.25, neg
    assert lex.lookup("furious")[1] > lex.lookup("calm")[1]  # arousal
    assert lex.lookup("proud")[2] > lex.lookup("helpless")[2]  # dominance


# --- lookup, lemmas, tokens --------------------------------------------------------------------


@pytest.mark.parametrize("form, lemma", [
    ("Happy", "happy"), ("loved", "love"), ("loves", "love"), ("loving", "love"),
    ("worrying", "worry"), ("worries", "worry"), ("happily", "happy"), ("happier", "happy"),
    ("terribly", "terrible"), ("sadly", "sad"), ("friends", "friend"), ("friend's", "friend"),
    ("died", "die"), ("dying", "die"), ("hurting", "hurt"), ("kisses", "kiss"),
])
def test_lookup_light_lemmatisation(lex, form, lemma):
    assert lex.lookup(form) == lex.entries[lemma]


def test_lookup_unknown_and_short_stems(lex):
    assert lex.lookup("xylophonic") is None
    assert lex.lookup("") is None
    # "has" must not be stripped to a 2-letter stem
    assert all(len(c) >= 2 for c in lemma_candidates("has"))


def test_tokenize_contractions_and_quotes():
    assert tokenize("I DON’T like it, ok?") == ["i", "don't", "like", "it", ",", "ok", "?"]
    assert tokenize("i don ' t know") == ["i", "don't", "know"]  # DailyDialog spacing


# --- text VAD and negation ---------------------------------------------------------------------


def test_text_vad_mean_and_cues(lex):
    vad, cues = lex.text_vad("Happy happy day, so furious!")
    expected = [lex.lookup(w) for w in ("happy", "happy", "day", "furious")]
    assert approx3(vad, tuple(sum(e[i] for e in expected) / 4 for i in range(3)))
    assert cues == ["happy", "day", "furious"]
    # one cue per lexicon entry, first spelling kept
    assert lex.text_vad("rewards and a reward, loved it, love")[1] == ["rewards", "loved"]
    assert lex.text_vad("qwzx blorp") == (None, [])


@pytest.mark.parametrize("negated", [
    "I am not happy", "I'm not happy", "I don't feel happy", "I don’t feel happy",
    "i dont feel happy", "never happy", "no happy", "without being happy", "I can't be happy",
])
def test_negation_mirrors_valence(lex, negated):
    v, a, d = lex.lookup("happy")
    _, cues = lex.text_vad(negated)
    happy = [m for m in lex.matches(negated) if m.token == "happy"]
    assert happy and happy[0].negated is True and happy[0].lemma == "happy"
    assert happy[0].vad == pytest.approx((1 - v, a, d))
    assert "happy" in cues


def test_plain_happy_vs_not_happy(lex):
    happy, _ = lex.text_vad("happy")
    not_happy, _ = lex.text_vad("not happy")
    assert not_happy[0] == pytest.approx(1 - happy[0])
    assert not_happy[1:] == pytest.approx(happy[1:])
    assert happy[0] > 0.7 > 0.3 > not_happy[0]


def test_negation_scope_window_and_punctuation(lex):
    # punctuation and "but" close the scope
    assert lex.text_vad("No. I am happy")[0][0] == pytest.approx(lex.lookup("happy")[0])
    assert lex.text_vad("not bad, but happy")[0][0] == pytest.approx(
        ((1 - lex.lookup("bad")[0]) + lex.lookup("happy")[0]) / 2)
    # the window is 3 tokens: "happy" as the 4th token after "not" is not negated
    assert not lex.matches("not at all really happy")[-1].negated
    assert lex.matches("not really very happy")[-1].negated
    # "never been this/so X" intensifies, while "not so X" still negates
    assert not lex.matches("I've never been this sad")[-1].negated
    assert not lex.matches("never so happy")[-1].negated
    assert lex.matches("not so happy")[-1].negated


# --- weak VAD ----------------------------------------------------------------------------------


def test_weak_vad_blends_lexicon_and_labels(lex):
    text, labels = "I am so happy today", ["joy"]
    lex_vad, cues = lex.text_vad(text)
    prior = anchor(labels)
    for w in (0.0, 0.25, 0.5, 1.0):
        vad, src, cue_words = weak_vad(text, labels, lex, label_weight=w)
        assert src == "lexicon" and cue_words == cues
        assert vad.as_tuple() == pytest.approx(tuple((1 - w) * x + w * p for x, p in zip(lex_vad, prior)))
    default, _, _ = weak_vad(text, labels, lex)
    assert default == weak_vad(text, labels, lex, label_weight=0.5)[0]


def test_weak_vad_fallbacks(lex):
    # no word matched -> the labels' anchor alone, whatever the weight, tagged as such
    vad, src, cues = weak_vad("qwzx blorp", ["anger", "disgust"], lex, label_weight=0.1)
    assert src == "label_anchor" and cues == []
    assert vad.as_tuple() == pytest.approx(anchor(["anger", "disgust"]))
    # no labels -> the lexicon alone
    vad, src, _ = weak_vad("furious", [], lex, label_weight=0.9)
    assert src == "lexicon" and vad.as_tuple() == pytest.approx(lex.lookup("furious"))
    # neither -> neutral point, source none
    vad, src, cues = weak_vad("qwzx blorp", [], lex)
    assert (vad, src, cues) == (VAD(v=0.5, a=0.5, d=0.5), "none", [])


def test_weak_vad_rejects_bad_arguments(lex):
    with pytest.raises(ValueError):
        weak_vad("happy", ["joy"], lex, label_weight=1.5)
    with pytest.raises(ValueError, match="no VAD anchor"):
        weak_vad("happy", ["not-a-label"], lex)


def test_with_weak_vad_fills_and_keeps_gold(lex):
    rec = Record(id="1", text="I am furious about this", labels=["anger"])
    out = with_weak_vad(rec, lex)
    assert rec.vad is None and rec.vad_source == "none"  # input untouched
    expected, _, _ = weak_vad(rec.text, rec.labels, lex)
    assert out.vad == expected.rounded() and out.vad_source == "lexicon"
    assert all(round(x, 2) == x for x in out.vad.as_tuple())
    assert out.text == rec.text and out.labels == rec.labels

    gold = Record(id="2", text="I am furious", labels=["anger"], vad=VAD(v=0.9, a=0.1, d=0.3),
                  vad_source="gold")
    kept = with_weak_vad(gold, lex)
    assert kept.vad == gold.vad and kept.vad_source == "gold"

    empty = with_weak_vad(Record(id="3", text="qwzx"), lex)
    assert empty.vad == VAD(v=0.5, a=0.5, d=0.5) and empty.vad_source == "none"

    anchored = with_weak_vad(Record(id="4", text="qwzx", labels=["anger"]), lex)
    assert anchored.vad_source == "label_anchor"
    assert anchored.vad == VAD(**dict(zip("vad", anchor(["anger"])))).rounded()


def test_rationale_for(lex):
    r = rationale_for("I am furious that the bus was late and I'm not happy", ["anger"], lex)
    assert r.startswith("cues: ") and "furious" in r and "not happy" in r
    assert len(r.split()) <= MAX_RATIONALE_WORDS
    assert r == rationale_for("I am furious that the bus was late and I'm not happy", ["anger"], lex)
    long = " ".join(["terrible awful horrible disgusting furious hate sad grief"] * 3)
    assert len(rationale_for(long, [], lex).split()) <= MAX_RATIONALE_WORDS
    assert rationale_for("The table is by the door", ["neutral"], lex) == "no strong emotion words"
    assert rationale_for("qwzx", [], lex) == "no strong emotion words"
    assert rationale_for("qwzx", ["anger"], lex).startswith("no strong emotion words")


def test_load_lexicon_cache(tmp_path):
    assert load_lexicon(None) is load_lexicon(None)
    assert load_lexicon(None).name == "builtin"
    p = tmp_path / "mini.tsv"
    p.write_text("calm\t0.8\t0.1\t0.6\n")
    assert load_lexicon(p) is load_lexicon(str(p))


# --- other formats -----------------------------------------------------------------------------


def test_nrc_with_header(tmp_path):
    p = tmp_path / "NRC-VAD-Lexicon.txt"
    p.write_text("Word\tValence\tArousal\tDominance\naaaaaaah\t0.479\t0.606\t0.291\n\n"
                 "abandon\t0.052\t0.519\t0.198\nhappy\t1.000\t0.735\t0.772\n")
    lex = Lexicon.load(p)
    assert len(lex) == 3 and lex.name == "NRC-VAD-Lexicon.txt"
    assert lex.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert lex.lookup("abandoned") == pytest.approx((0.052, 0.519, 0.198))
    assert lex.text_vad("not happy")[0] == pytest.approx((0.0, 0.735, 0.772))


def test_nrc_without_header(tmp_path):
    p = tmp_path / "nrc.txt"
    p.write_text("calm\t0.8\t0.1\t0.6\nangry\t0.1\t0.9\t0.6\n")
    lex = Lexicon.load(p)
    assert len(lex) == 2 and lex.lookup("calm") == pytest.approx((0.8, 0.1, 0.6))


def test_nrc_v2_signed_scale_is_rescaled(tmp_path):
    p = tmp_path / "nrc2.txt"
    p.write_text("term\tvalence\tarousal\tdominance\ngood\t0.8\t0.2\t0.5\nbad\t-0.8\t0.4\t-0.2\n")
    lex = Lexicon.load(p)
    assert lex.lookup("good") == pytest.approx((0.9, 0.6, 0.75))
    assert lex.lookup("bad") == pytest.approx((0.1, 0.7, 0.4))


@pytest.mark.parametrize("bad, line, what", [
    ("calm\t0.8\t0.1\n", 3, "4 tab-separated fields"),
    ("calm\t0.8\tx\t0.6\n", 3, "not a number"),
    ("calm\t1.5\t0.1\t0.6\n", 3, "outside"),
    ("calm\t0.8\tnan\t0.6\n", 3, "not finite"),
])
def test_bad_row_names_file_and_line(tmp_path, bad, line, what):
    p = tmp_path / "broken.tsv"
    p.write_text("word\tvalence\tarousal\tdominance\nhappy\t0.9\t0.6\t0.7\n" + bad)
    with pytest.raises(ValueError, match=rf"broken\.tsv:{line}: .*{what}"):
        Lexicon.load(p)


def test_unrecognised_and_empty_files(tmp_path):
    p = tmp_path / "words.txt"
    p.write_text("happy sad\n")
    with pytest.raises(ValueError, match=r"words\.txt:1: unrecognised"):
        Lexicon.load(p)
    e = tmp_path / "empty.tsv"
    e.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no lexicon entries"):
        Lexicon.load(e)


def test_folder_or_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=rf"{tmp_path}: is a folder; a lexicon is one file"):
        Lexicon.load(tmp_path)
    with pytest.raises(ValueError, match=rf"{tmp_path}: is a folder"):
        load_lexicon(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'nope.tsv'}: no such lexicon file"):
        Lexicon.load(tmp_path / "nope.tsv")


def test_warriner_layout_small(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text(",Word,V.Mean.Sum,V.SD.Sum,A.Mean.Sum,A.SD.Sum,D.Mean.Sum\n"
                 "1,happy,9,1,5,1,1\n2,AIDS,1.33,1,5,1,3\n3,aids,3.5,1,5,1,5\n")
    lex = Lexicon.load(p)
    assert len(lex) == 3
    assert lex.lookup("happy") == pytest.approx((1.0, 0.5, 0.0))
    assert lex.lookup("AIDS") == pytest.approx((2.5 / 8, 0.5, 0.5))  # lower-case spelling wins
    p.write_text(",Word,V.Mean.Sum,A.Mean.Sum,D.Mean.Sum\n1,happy,9,5,1\n2,sad,0.5,5,1\n")
    with pytest.raises(ValueError, match=r"w\.csv:3: V\.Mean\.Sum 0\.5 outside"):
        Lexicon.load(p)


def test_warriner_shared_data(shared_data):
    # `shared_data` (conftest): $EMOLOOM_SHARED_DATA or <checkout>/../shared/data, else skipped
    csv_path = shared_data / "warriner" / "Ratings_Warriner_et_al.csv"
    if not csv_path.is_file():
        pytest.skip(f"Warriner ratings not found at {csv_path}")
    lex = Lexicon.load(csv_path)
    assert len(lex) == 13915
    assert lex.name == "Ratings_Warriner_et_al.csv"
    assert all(0.0 <= x <= 1.0 for vad in lex.entries.values() for x in vad)
    # the first data row, rescaled from 1..9 (read here rather than copied into the repo)
    with open(csv_path, newline="", encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    expected = tuple((float(row[c]) - 1) / 8 for c in ("V.Mean.Sum", "A.Mean.Sum", "D.Mean.Sum"))
    assert lex.lookup(row["Word"]) == pytest.approx(expected)
    assert lex.lookup("happy")[0] > 0.8 > 0.2 > lex.lookup("sad")[0]
