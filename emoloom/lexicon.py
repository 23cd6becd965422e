"""Word-level VAD lexicons and the lexicon-weak VAD target.

A `Lexicon` maps lower-case words to (valence, arousal, dominance) in [0, 1]. Three file
formats are recognised from their content (not their name):

* NRC-VAD style TSV: ``word<TAB>valence<TAB>arousal<TAB>dominance``, with or without a header
  line. Values are 0..1; if any value is negative the file is taken to be on the -1..1 scale of
  NRC-VAD v2 and every value is rescaled with (x + 1) / 2.
* Warriner et al. (2013) CSV: a header with ``Word``, ``V.Mean.Sum``, ``A.Mean.Sum`` and
  ``D.Mean.Sum``; 1..9 ratings are rescaled with (x - 1) / 8.
* The built-in EmoLoom TSV (`resources/lexicon_builtin.tsv`): the NRC layout with a header and
  ``#`` comment lines.

`weak_vad` turns a text plus its gold labels into a VAD target: the mean lexicon VAD of the
matched words (with simple negation), blended with the labels' VAD anchors from
`emoloom.labels`.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from emoloom.contract import VAD, Record, clip_rationale
from emoloom.labels import VAD_ANCHORS, anchor

Triple = tuple[float, float, float]


class Match(NamedTuple):
    """A lexicon word found in a text."""

    token: str       # as written (lower-cased)
    lemma: str       # the lexicon entry it resolved to
    vad: Triple      # negation applied
    negated: bool


BUILTIN_PATH = Path(__file__).resolve().parent / "resources" / "lexicon_builtin.tsv"

_WARRINER_COLUMNS = ("Word", "V.Mean.Sum", "A.Mean.Sum", "D.Mean.Sum")

# ---------------------------------------------------------------------------------------------
# Tokenisation, negation, lemmatisation
# ---------------------------------------------------------------------------------------------

# Words (with inner apostrophes: don't, it's) and the punctuation that ends a negation scope.
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)*|[.,;:!?()\"]")
# Pre-tokenised corpora (DailyDialog) write "don ' t"; glue clitics back onto their word.
_SPLIT_CLITIC = re.compile(r"([a-z])\s*'\s*(t|s|re|ve|ll|d|m)\b")
_SCOPE_BREAK = frozenset(".,;:!?()\"") | {"but", "although", "though", "however"}

NEGATORS = frozenset({
    "not", "no", "never", "without", "nothing", "nobody", "none", "neither", "nor", "cannot",
    # apostrophe-less spellings common in chat text ("wont"/"cant" are rare as real words)
    "dont", "doesnt", "didnt", "isnt", "wasnt", "arent", "werent", "cant", "couldnt",
    "wouldnt", "shouldnt", "wont", "havent", "hasnt", "hadnt", "aint",
})
NEGATION_WINDOW = 3  # tokens after a negator whose valence is mirrored
_DEGREE = frozenset({"this", "that", "so", "such", "more"})  # "never been so happy"


def _is_negator(token: str) -> bool:
    return token in NEGATORS or token.endswith("n't")


def tokenize(text: str) -> list[str]:
    """Lower-case word and scope-punctuation tokens; curly apostrophes normalised."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = _SPLIT_CLITIC.sub(r"\1'\2", text)
    return _TOKEN.findall(text)


_VOWELS = set("aeiou")
_MIN_STEM = 3  # shorter stems match too much ("has" -> "ha")


def lemma_candidates(word: str) -> Iterator[str]:
    """The word, then the forms a few English suffix strips give, most specific first.

    Rules (each candidate is only used if the lexicon has it):
      's            -> drop          (friend's -> friend)
      -ies/-ied     -> -y            (worries, worried -> worry)
      -ier/-iest/-ily -> -y          (happier, happiest, happily -> happy)
      -es, -s       -> drop          (kisses -> kiss, tears -> tear; not after -ss)
      -ed, -ing     -> drop, drop+e, undouble (annoyed, loved -> love, stopped -> stop)
      -ying         -> -ie           (dying -> die)
      -ly           -> drop; -bly -> -ble (sadly -> sad, terribly -> terrible)
    """
    yield word
    if word.endswith("'s"):
        word = word[:-2]
        yield word
    n = len(word)

    def stem_forms(stem: str) -> Iterator[str]:
        if len(stem) >= _MIN_STEM:
            yield stem
        if len(stem) + 1 >= _MIN_STEM:
            yield stem + "e"  # loved -> love, died -> die
        else:
            return
        # doubled final consonant: stopped -> stopp -> stop
        if len(stem) >= 4 and stem[-1] == stem[-2] and stem[-1] not in _VOWELS | {"l", "s"}:
            yield stem[:-1]

    for suffix in ("ies", "ied", "ier", "iest", "ily"):
        if word.endswith(suffix) and n - len(suffix) >= _MIN_STEM - 1:
            yield word[: -len(suffix)] + "y"
    if word.endswith("ying") and n >= 5:
        yield word[:-4] + "ie"  # dying -> die, lying -> lie
    if word.endswith("es") and not word.endswith("ss"):
        yield from stem_forms(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        if n - 1 >= _MIN_STEM:
            yield word[:-1]
    if word.endswith("ed"):
        yield from stem_forms(word[:-2])
    if word.endswith("ing"):
        yield from stem_forms(word[:-3])
    if word.endswith("bly"):
        yield word[:-1] + "e"
    if word.endswith("ly") and n - 2 >= _MIN_STEM:
        yield word[:-2]


# ---------------------------------------------------------------------------------------------
# Lexicon
# ---------------------------------------------------------------------------------------------


class Lexicon:
    """A word -> (valence, arousal, dominance) table, values in [0, 1]."""

    def __init__(self, entries: dict[str, Triple], name: str, sha256: str | None = None):
        # `entries` keeps the file's spelling: Warriner rates "aids" and "AIDS", "pope" and
        # "Pope" separately, so len() is the file's entry count. Lookups go through a
        # lower-case index in which the lower-case spelling wins over capitalised variants.
        self.entries = entries
        self.name = name
        self.sha256 = sha256
        self._index: dict[str, Triple] = {}
        for word, vad in entries.items():
            low = word.lower()
            if word == low:
                self._index[low] = vad
            else:
                self._index.setdefault(low, vad)  # a later lower-case spelling still overrides
        self._cache: dict[str, Triple | None] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and self.lookup(word) is not None

    def __repr__(self) -> str:
        return f"Lexicon(name={self.name!r}, words={len(self)})"

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def builtin(cls) -> "Lexicon":
        lex = cls.load(BUILTIN_PATH)
        lex.name = "builtin"
        return lex

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Lexicon":
        """Read an NRC-VAD TSV, a Warriner CSV or the built-in TSV (format told by content)."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path}: is a folder; a lexicon is one file (NRC-VAD TSV or Warriner CSV)")
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such lexicon file") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
        # (line number, line) for the lines that carry data: blank and '#' lines skipped.
        lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1)
                 if line.strip() and not line.lstrip().startswith("#")]
        if not lines:
            raise ValueError(f"{path}: no lexicon entries")
        first = lines[0][1]
        if "\t" not in first and all(col in first for col in _WARRINER_COLUMNS):
            entries = _parse_warriner(path, lines)
        elif "\t" in first:
            entries = _parse_tsv(path, lines)
        else:
            raise ValueError(
                f"{path}:{lines[0][0]}: unrecognised lexicon format: expected "
                "word<TAB>valence<TAB>arousal<TAB>dominance or a Warriner CSV header "
                f"({', '.join(_WARRINER_COLUMNS)})"
            )
        if not entries:
            raise ValueError(f"{path}: no lexicon entries")
        return cls(entries, name=path.name, sha256=hashlib.sha256(raw).hexdigest())

    # -- queries ------------------------------------------------------------------------------

    def exact(self, word: str) -> Triple | None:
        """VAD of the lower-cased word as listed, without lemmatisation."""
        return self._index.get(word.strip().lower())

    def lemma(self, word: str) -> str | None:
        """The lexicon entry a word resolves to (see `lemma_candidates`), or None."""
        word = word.strip().lower().replace("\u2019", "'")
        if word not in self._cache:
            self._cache[word] = next((c for c in lemma_candidates(word) if c in self._index), None)
        return self._cache[word]

    def lookup(self, word: str) -> Triple | None:
        """VAD of a word: lower-cased, then the light lemmatisation of `lemma_candidates`."""
        lemma = self.lemma(word)
        return None if lemma is None else self._index[lemma]

    def matches(self, text: str) -> list[Match]:
        """One `Match` per lexicon word of the text, in order, with negation applied.

        A negator (not, no, never, without, *n't, ...) mirrors the valence (v -> 1 - v) of the
        lexicon words among the next NEGATION_WINDOW tokens; punctuation and "but" end the scope.
        Arousal and dominance are left as they are. "never" followed by a degree word
        ("never been this/so happy") intensifies rather than negates, so that closes its scope.
        """
        out: list[Match] = []
        left = 0  # tokens of negation scope still open
        negator = ""
        for tok in tokenize(text):
            if tok in _SCOPE_BREAK or (negator == "never" and left and tok in _DEGREE):
                left = 0
                continue
            if _is_negator(tok):
                left, negator = NEGATION_WINDOW, tok
                continue
            lemma = self.lemma(tok)
            negated = left > 0
            if left:
                left -= 1
            if lemma is None:
                continue
            v, a, d = self._index[lemma]
            out.append(Match(tok, lemma, (1.0 - v if negated else v, a, d), negated))
        return out

    def text_vad(self, text: str) -> tuple[Triple | None, list[str]]:
        """Mean VAD over the matched tokens (negation applied) and the matched cue words.

        Cue words are the matched tokens as written (lower-cased), in text order, one per
        lexicon entry (first spelling kept). Returns (None, []) when no word is in the lexicon.
        """
        found = self.matches(text)
        if not found:
            return None, []
        mean = tuple(sum(m.vad[i] for m in found) / len(found) for i in range(3))
        cues: dict[str, str] = {}
        for m in found:
            cues.setdefault(m.lemma, m.token)
        return mean, list(cues.values())  # type: ignore[return-value]


def _number(path: Path, lineno: int, field: str, value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: {field} is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{path}:{lineno}: {field} is not finite: {value!r}")
    return x


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _parse_tsv(path: Path, lines: list[tuple[int, str]]) -> dict[str, Triple]:
    """NRC-VAD / built-in layout. The first line is a header when its value columns aren't numbers."""
    rows: list[tuple[int, str, Triple]] = []
    for k, (lineno, line) in enumerate(lines):
        fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
        if len(fields) != 4:
            raise ValueError(f"{path}:{lineno}: expected 4 tab-separated fields "
                             f"(word, valence, arousal, dominance), got {len(fields)}")
        if k == 0 and not any(_is_number(f) for f in fields[1:]):
            continue  # header, e.g. "Word\tValence\tArousal\tDominance"
        word = fields[0]
        if not word:
            raise ValueError(f"{path}:{lineno}: empty word")
        vad = tuple(_number(path, lineno, name, f)
                    for name, f in zip(("valence", "arousal", "dominance"), fields[1:]))
        rows.append((lineno, word, vad))  # type: ignore[arg-type]
    # NRC-VAD v2 is on -1..1: one negative value anywhere means the whole file is.
    signed = any(x < 0 for _, _, vad in rows for x in vad)
    lo = -1.0 if signed else 0.0
    entries: dict[str, Triple] = {}
    for lineno, word, vad in rows:
        for name, x in zip(("valence", "arousal", "dominance"), vad):
            if not lo <= x <= 1.0:
                raise ValueError(f"{path}:{lineno}: {name} {x} outside [{lo:g}, 1]")
        if signed:
            vad = tuple((x + 1.0) / 2.0 for x in vad)  # type: ignore[assignment]
        entries.setdefault(word, vad)  # first entry of a repeated spelling wins
    return entries


def _parse_warriner(path: Path, lines: list[tuple[int, str]]) -> dict[str, Triple]:
    """Warriner et al. (2013) CSV: 1..9 means of the whole sample, rescaled to 0..1."""
    reader = csv.reader(line for _, line in lines)
    header = next(reader)
    idx = [header.index(col) for col in _WARRINER_COLUMNS]
    entries: dict[str, Triple] = {}
    for (lineno, _), row in zip(lines[1:], reader):
        if len(row) <= max(idx):
            raise ValueError(f"{path}:{lineno}: expected at least {max(idx) + 1} comma-separated "
                             f"fields, got {len(row)}")
        word = row[idx[0]].strip()
        if not word:
            raise ValueError(f"{path}:{lineno}: empty word")
        vad = []
        for col, i in zip(_WARRINER_COLUMNS[1:], idx[1:]):
            x = _number(path, lineno, col, row[i])
            if not 1.0 <= x <= 9.0:
                raise ValueError(f"{path}:{lineno}: {col} {x} outside [1, 9]")
            vad.append((x - 1.0) / 8.0)
        entries.setdefault(word, tuple(vad))  # type: ignore[arg-type]  # first one wins
    return entries


_LOADED: dict[str | None, Lexicon] = {}


def load_lexicon(path: str | os.PathLike | None) -> Lexicon:
    """The built-in lexicon for None, else the file at `path`; each path is read once."""
    key = None if path is None else str(Path(path).resolve())
    if key not in _LOADED:
        _LOADED[key] = Lexicon.builtin() if key is None else Lexicon.load(key)
    return _LOADED[key]


# ---------------------------------------------------------------------------------------------
# Lexicon-weak VAD targets and rationales
# ---------------------------------------------------------------------------------------------

NEUTRAL_VAD: Triple = (0.5, 0.5, 0.5)


def _label_anchor(labels: Iterable[str]) -> Triple | None:
    labels = list(labels)
    unknown = [l for l in labels if l not in VAD_ANCHORS]
    if unknown:
        raise ValueError(f"no VAD anchor for labels {unknown}")
    return anchor(labels)


def weak_vad(text: str, labels: list[str], lexicon: Lexicon,
             label_weight: float = 0.5) -> tuple[VAD, str, list[str]]:
    """(vad, vad_source, cue_words) for a text with gold `labels`.

    * words matched and labels given: (1 - label_weight) * lexicon + label_weight * anchor,
      source "lexicon"
    * no labels: the lexicon mean alone, source "lexicon"
    * no word matched: the labels' mean anchor alone, source "label_anchor" (no lexicon in it)
    * neither: (0.5, 0.5, 0.5) with source "none"
    """
    if not 0.0 <= label_weight <= 1.0:
        raise ValueError(f"label_weight must be in [0, 1], got {label_weight}")
    lex, cues = lexicon.text_vad(text)
    prior = _label_anchor(labels)
    source = "lexicon"
    if lex is not None and prior is not None:
        w = label_weight
        vad = tuple((1.0 - w) * x + w * p for x, p in zip(lex, prior))
    elif lex is not None:
        vad = lex
    elif prior is not None:
        vad, source = prior, "label_anchor"
    else:
        return VAD(v=NEUTRAL_VAD[0], a=NEUTRAL_VAD[1], d=NEUTRAL_VAD[2]), "none", []
    v, a, d = (min(1.0, max(0.0, x)) for x in vad)  # guard float drift past the bounds
    return VAD(v=v, a=a, d=d), source, cues


def with_weak_vad(record: Record, lexicon: Lexicon, label_weight: float = 0.5) -> Record:
    """A copy of `record` with a lexicon-weak VAD; an existing (gold) vad is left untouched."""
    if record.vad is not None:
        return record.model_copy(deep=True)
    vad, source, _ = weak_vad(record.text, record.labels, lexicon, label_weight)
    return record.model_copy(deep=True, update={"vad": vad.rounded(), "vad_source": source})


CUE_MIN_VALENCE_SHIFT = 0.2  # |v - 0.5| a word needs to count as an emotion cue ...
CUE_MIN_AROUSAL = 0.75       # ... or this much arousal (shock, panic, wow)
MAX_CUES = 4


def rationale_for(text: str, labels: list[str], lexicon: Lexicon) -> str:
    """A short deterministic rationale (<= 12 words) naming the strongest lexicon cues.

    e.g. 'cues: furious, late' or 'cues: not happy, tired'. Without strong cues:
    'no strong emotion words', plus the implied labels when they aren't just neutral.
    """
    strong: dict[str, tuple[float, int, str]] = {}  # lemma (+negation) -> (strength, pos, cue)
    for pos, m in enumerate(lexicon.matches(text)):
        v, a, _ = m.vad
        strength = abs(v - 0.5)
        if strength < CUE_MIN_VALENCE_SHIFT and a < CUE_MIN_AROUSAL:
            continue
        key = ("not " if m.negated else "") + m.lemma
        if key not in strong:
            strong[key] = (strength + 0.25 * a, pos, ("not " if m.negated else "") + m.token)
    if strong:
        # the strongest few, shown in text order
        top = sorted(strong.values(), key=lambda c: (-c[0], c[1]))[:MAX_CUES]
        top.sort(key=lambda c: c[1])
        return clip_rationale("cues: " + ", ".join(c[2] for c in top))
    implied = [l for l in labels if l != "neutral"][:2]
    if implied:
        return clip_rationale("no strong emotion words; implies " + " and ".join(implied))
    return "no strong emotion words"
