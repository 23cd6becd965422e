"""Valence Flip: mirrored copies of training records with the opposite valence.

A record is flipped when every one of its labels has a mirror in `MIRRORS` (below) for its
taxonomy. The text is changed in the lexicon's sense: each emotion cue word of the record's
valence (a word of `POSITIVE_CUES` / `NEGATIVE_CUES` that the lexicon confirms: v >= 0.5 +
CUE_SHIFT for a positive record, <= 0.5 - CUE_SHIFT for a negative one, or not in the lexicon)
is replaced by its antonym-ish entry (kept only when the lexicon does not put the replacement on
the same side) or, in the negate modes, prefixed with "not" (the lexicon mirrors the valence of
negated words). The flip is *confident* only when at least one cue was found and every cue was
changed; otherwise no flip is made: not when a valence word is negated ("not happy", "not
okay" already read the other way), nor when an emotion word without a mirror (`NO_MIRROR_CUES`: "thanks", "haha")
carries the record's valence. Situation words ("wedding", "funeral") stay: the flip mirrors the
emotion expressed about the same situation. The flipped record gets:

* labels mapped through `MIRRORS`, valence mirrored v -> 1 - v, arousal and dominance kept;
* id ``<source id>#flip`` and ``meta={"flip_of": <source id>, ...}``;
* the source's vad_source (gold / lexicon): the mirrored triple derives from that target.

`valence_flip` applies this at a configurable rate (seeded), to records that already carry a
VAD target (lexicon-weak VAD is filled in first by the caller).
"""
from __future__ import annotations

import random
import re
from types import MappingProxyType
from typing import Iterable

from emoloom.contract import VAD, Record
from emoloom.labels import VAD_ANCHORS

CUE_SHIFT = 0.15  # |v - 0.5| a lexicon word needs to count as a cue of the record's valence


def _pairs(*pairs: tuple[str, str]) -> MappingProxyType:
    table: dict[str, str] = {}
    for a, b in pairs:
        assert a not in table and b not in table, (a, b)
        table[a], table[b] = b, a
    return MappingProxyType(table)


# Mirrored emotion pairs, symmetric, each label in at most one pair: opposite valence with a
# similar object or situation (admiration <-> disapproval of a person's act, optimism <->
# disappointment about an outcome, relief <-> fear of a threat). Labels without a natural
# mirror (neutral, surprise, curiosity, confusion, realization, anger, grief, ...) are never
# flipped: inventing a partner would teach a wrong label.
MIRRORS = MappingProxyType({
    "goemotions": _pairs(
        ("joy", "sadness"), ("admiration", "disapproval"), ("excitement", "nervousness"),
        ("optimism", "disappointment"), ("pride", "embarrassment"), ("gratitude", "annoyance"),
        ("love", "disgust"), ("relief", "fear"),
    ),
    "empathetic": _pairs(
        ("joyful", "sad"), ("proud", "ashamed"), ("confident", "apprehensive"),
        ("hopeful", "disappointed"), ("excited", "anxious"), ("grateful", "annoyed"),
        ("content", "lonely"), ("impressed", "disgusted"), ("trusting", "jealous"),
        ("prepared", "afraid"),
    ),
    "dailydialog": _pairs(("happiness", "sadness")),
    "ekman": _pairs(("joy", "sadness")),
})

# Emotion cue words of each valence and their replacement of the opposite valence (antonym-ish,
# written for this project). Keys are lower-case words as written, inflected forms listed where
# the synthetic and real corpora use them. The lexicon confirms a cue at flip time (when it knows
# the word, its valence must lie on the cue's side) and vets the replacement (it must not lie on
# the cue's side).
POSITIVE_CUES = MappingProxyType({
    "happy": "sad", "happiness": "sadness", "delighted": "heartbroken", "thrilled": "devastated",
    "joy": "sorrow", "joyful": "miserable", "overjoyed": "crushed", "glad": "upset",
    "pleased": "displeased", "amazing": "awful", "impressive": "disappointing", "admire": "despise",
    "brilliant": "terrible", "respect": "contempt", "excited": "nervous", "exciting": "worrying",
    "pumped": "jittery", "epic": "dreadful", "woohoo": "yikes", "hopeful": "hopeless",
    "proud": "ashamed", "grateful": "resentful", "thankful": "bitter", "appreciate": "resent",
    "love": "hate", "loved": "hated", "adore": "loathe", "lovely": "disgusting", "relieved": "scared",
    "relief": "dread", "great": "terrible", "good": "bad", "wonderful": "horrible", "confident": "insecure",
    "content": "lonely", "satisfied": "dissatisfied", "impressed": "disgusted", "amazed": "appalled",
    "trusted": "envied", "trust": "envy", "fun": "dull", "funny": "awful", "best": "worst",
    "beautiful": "ugly", "perfect": "awful", "fantastic": "dreadful", "awesome": "awful",
    "fine": "awful", "calm": "tense", "safe": "unsafe", "agree": "disagree", "approve": "disapprove",
    "support": "oppose", "prepared": "afraid", "ready": "scared", "yay": "ugh", "yum": "yuck",
})
NEGATIVE_CUES = MappingProxyType({
    "sad": "happy", "sadness": "happiness", "heartbroken": "delighted", "devastated": "thrilled",
    "sorrow": "joy", "miserable": "joyful", "crushed": "overjoyed", "upset": "glad",
    "displeased": "pleased", "awful": "amazing", "terrible": "wonderful", "horrible": "wonderful",
    "disappointed": "hopeful", "disappointing": "impressive", "letdown": "triumph", "nervous": "excited",
    "anxious": "excited", "jittery": "pumped", "worried": "excited", "scared": "relieved",
    "afraid": "prepared", "frightened": "relieved", "terrified": "relieved", "terrifies": "delights",
    "frightens": "delights", "ashamed": "proud", "shame": "pride", "embarrassed": "proud",
    "embarrassing": "uplifting", "awkward": "confident", "cringe": "yay", "annoying": "delightful",
    "annoyed": "grateful", "irritating": "pleasing", "irritated": "thankful", "ugh": "yay", "hate": "love",
    "hated": "loved", "loathe": "adore", "disgusting": "lovely", "disgusted": "impressed", "gross": "lovely",
    "grossed": "charmed", "revolting": "delightful", "yuck": "yum", "ew": "yum", "wrong": "right",
    "disagree": "agree", "disapprove": "approve", "bad": "good", "worst": "best", "ugly": "beautiful",
    "lonely": "content", "guilty": "grateful", "jealous": "trusting", "envious": "trusting",
    "apprehensive": "confident", "uneasy": "confident", "sorry": "glad", "regret": "cherish",
    "angry": "happy", "mad": "glad", "furious": "delighted", "depressed": "cheerful", "unhappy": "happy",
    "hopeless": "hopeful", "tense": "calm", "sadly": "happily", "doubts": "faith",
})
# Emotion words with no safe replacement: when one of them carries the record's valence the flip
# is not confident (the flipped text would still say "thanks" or "haha" under a negative label).
NO_MIRROR_CUES = MappingProxyType({
    1: frozenset({"thanks", "thank", "haha", "lol", "hilarious", "laughed", "hugs", "warms", "hope",
                  "comforted", "faithful", "loyal", "curious", "proudly"}),
    -1: frozenset({"shocked", "petrified", "devastating", "furious", "livid", "enraged", "mourning",
                   "heart", "aches", "miss", "alone", "tired", "blue", "down", "broke",
                   "outrageous", "unacceptable", "regret", "nauseous", "sick", "teary"}),
})
WORD_MAP = MappingProxyType({**POSITIVE_CUES, **NEGATIVE_CUES})  # both directions, for reference

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


def mirror_labels(taxonomy: str, labels: Iterable[str]) -> list[str] | None:
    """The mirrored labels, or None when a label has no mirror in its taxonomy."""
    table = MIRRORS.get(taxonomy, {})
    out = []
    for label in labels:
        if label not in table:
            return None
        out.append(table[label])
    return list(dict.fromkeys(out)) or None


def mirror_vad(vad: VAD) -> VAD:
    return VAD(v=round(1.0 - vad.v, 4), a=vad.a, d=vad.d)


def _side(labels: list[str]) -> int:
    """+1 for a positive record, -1 for a negative one, 0 when the labels' valence is unclear."""
    v = sum(VAD_ANCHORS[l][0] for l in labels) / len(labels)
    return 1 if v > 0.55 else -1 if v < 0.45 else 0


def flip_text(text: str, side: int, lexicon, mode: str = "substitute") -> str | None:
    """The text with its emotion cue words flipped, or None when the flip is not confident.

    `side` is the record's valence (+1 positive, -1 negative); its cues are the words of
    POSITIVE_CUES / NEGATIVE_CUES that the lexicon does not contradict (unknown, or valence on
    that side by at least CUE_SHIFT). substitute: the map's word (kept only when the lexicon does
    not put it on the same side); negate: "not <cue>"; both: the map's word, else "not <cue>".
    None when no cue was found, when a valence word is negated in the text ("not happy" already
    reads the other way), or when an unmirrorable cue (NO_MIRROR_CUES) is present.
    """
    if mode not in ("substitute", "negate", "both"):
        raise ValueError(f"unknown flip mode {mode!r}")
    if any(m.negated and abs(m.vad[0] - 0.5) >= CUE_SHIFT for m in lexicon.matches(text)):
        return None  # "not happy", "not okay": negated valence words; flipping them is unreliable
    cues = POSITIVE_CUES if side > 0 else NEGATIVE_CUES
    blockers = NO_MIRROR_CUES[1 if side > 0 else -1]
    pieces: list[str] = []
    last = changed = 0
    for m in _WORD.finditer(text):
        word = m.group().lower()
        if word in blockers and word not in cues:
            return None
        if word not in cues:
            continue
        vad = lexicon.lookup(word)
        if vad is not None and (vad[0] - 0.5) * side < CUE_SHIFT:
            continue  # the lexicon does not read it as a cue of this valence here
        new = None
        if mode in ("substitute", "both"):
            rv = lexicon.lookup(cues[word])
            if rv is None or (rv[0] - 0.5) * side < 0:
                new = cues[word]
        if new is None and mode in ("negate", "both"):
            new = "not " + word
        if new is None:
            return None  # a cue we cannot flip: the text would carry both valences
        pieces += [text[last:m.start()], new.capitalize() if m.group()[0].isupper() else new]
        last = m.end()
        changed += 1
    if not changed:
        return None
    pieces.append(text[last:])
    return "".join(pieces)


def flip_record(record: Record, lexicon, mode: str = "substitute") -> Record | None:
    """The Valence Flip of one record (it must carry a VAD target), or None when not confident."""
    if record.vad is None or not record.labels:
        return None
    labels = mirror_labels(record.taxonomy, record.labels)
    if labels is None:
        return None
    side = _side(record.labels)
    if side == 0:
        return None
    text = flip_text(record.text, side, lexicon, mode)
    if text is None:
        return None
    meta = {k: v for k, v in record.meta.items() if k != "flip_of"}
    meta["flip_of"] = record.id
    return record.model_copy(deep=True, update={
        "id": f"{record.id}#flip", "text": text, "labels": labels, "vad": mirror_vad(record.vad), "meta": meta,
    })


def valence_flip(records: Iterable[Record], lexicon, rate: float, seed: int = 0,
                 mode: str = "substitute") -> list[Record]:
    """Flipped copies of about `rate` of the flippable records (seeded; sources unchanged)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"flip rate must be in [0, 1], got {rate}")
    rng = random.Random(f"emoloom-valence-flip/{seed}")
    out = []
    for record in records:
        # one draw per record, flippable or not, so the choice of a record does not depend on others
        if rng.random() >= rate:
            continue
        flipped = flip_record(record, lexicon, mode)
        if flipped is not None:
            out.append(flipped)
    return out
