"""The JSON input-output contract shared by data loading, training and inference.

* `Record` is one input example (text, optional context turns, gold labels, VAD target).
* `render_prompt` is the single prompt template used for training and for inference.
* `render_target` is the one-line JSON answer a model is trained to produce.
* `parse_output` scans a raw generation from its tail and decides ParseOK.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from emoloom.labels import TAXONOMIES, taxonomy

MAX_RATIONALE_WORDS = 12
# Where a record's VAD target came from: gold annotation, the lexicon (words of the text, blended
# with the label anchor when labels are given), the label anchor alone (no lexicon word in the
# text), or nowhere (the neutral point).
VadSource = Literal["gold", "lexicon", "label_anchor", "none"]

# An astral character is one code point in a str, so a code point in U+D800..U+DFFF is always a
# lone surrogate (from a broken JSON escape or a cut UTF-16 pair) and cannot be encoded as UTF-8.
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def lone_surrogate(text: str) -> str | None:
    """A description of the first lone surrogate in `text` (e.g. "lone surrogate U+D800 at
    character 4"), or None when `text` is valid Unicode text."""
    m = _LONE_SURROGATE.search(text)
    return None if m is None else f"lone surrogate U+{ord(m.group()):04X} at character {m.start()}"


class VAD(BaseModel):
    """Valence, arousal, dominance, each in [0, 1]."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    v: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    a: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    d: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.v, self.a, self.d)

    def rounded(self) -> "VAD":
        return VAD(v=round(self.v, 2), a=round(self.a, 2), d=round(self.d, 2))


class Record(BaseModel):
    """One input example. Only `id` and `text` are required in user-supplied JSONL."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    text: str
    context: list[str] = Field(default_factory=list, description="previous turns, oldest first")
    corpus: str = "custom"
    taxonomy: str = "goemotions"
    split: str = "train"
    labels: list[str] = Field(default_factory=list)
    vad: VAD | None = None
    vad_source: VadSource = "none"
    # Free-form provenance, e.g. {"flip_of": "<source id>"} for Valence Flip records.
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    # mode="before": pydantic's own min_length check would fail first, with a vaguer message.
    @field_validator("id", "text", "corpus", "split", mode="before")
    @classmethod
    def _valid_text(cls, value: Any) -> Any:
        # Rejected, not repaired: a record is read exactly or reported and skipped (its text
        # could neither be tokenised nor written back as UTF-8).
        if isinstance(value, str) and (why := lone_surrogate(value)):
            raise ValueError(f"{why} (not valid Unicode text)")
        return value

    @field_validator("context")
    @classmethod
    def _valid_context(cls, value: list[str]) -> list[str]:
        for i, turn in enumerate(value):
            if why := lone_surrogate(turn):
                raise ValueError(f"turn {i}: {why} (not valid Unicode text)")
        return value

    @field_validator("meta")
    @classmethod
    def _valid_meta(cls, value: dict[str, Any]) -> dict[str, Any]:
        # ensure_ascii=False keeps lone surrogates as they are, so the encode finds them
        try:
            json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"lone surrogate U+{ord(exc.object[exc.start]):04X} (not valid Unicode text)") from None
        return value

    @model_validator(mode="after")
    def _labels_in_taxonomy(self) -> "Record":
        if self.taxonomy not in TAXONOMIES:
            raise ValueError(f"unknown taxonomy {self.taxonomy!r}; choose one of {', '.join(TAXONOMIES)}")
        allowed = TAXONOMIES[self.taxonomy]
        norm = _dedupe(l.strip().lower() for l in self.labels)
        unknown = [l for l in norm if l not in allowed]
        if unknown:
            raise ValueError(f"labels {unknown} are not in taxonomy {self.taxonomy!r}")
        self.labels = norm
        if self.vad is None and self.vad_source != "none":
            raise ValueError(f"vad_source={self.vad_source!r} but no vad given")
        return self


def record_error(exc: ValidationError) -> str:
    """One line for a record that failed validation: 'invalid record: <field>: <reason>'."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "record"
    return f"invalid record: {field}: {err['msg'].removeprefix('Value error, ')}"


def _dedupe(items) -> list[str]:
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------------------------------------
# Prompt and target
# ---------------------------------------------------------------------------------------------

PROMPT_TEMPLATE = (
    "Classify the emotion of the text and rate its valence, arousal and dominance.\n"
    "Labels: {labels}\n"
    "{context}"
    "Text: {text}\n"
    'Answer with one line of JSON: {{"labels":[...],"vad":{{"v":0-1,"a":0-1,"d":0-1}},"rationale":"..."}}\n'
)


def render_prompt(record: Record) -> str:
    """The one prompt template for training and inference (context turns included when present)."""
    context = "".join(f"Turn {i + 1}: {turn}\n" for i, turn in enumerate(record.context))
    if context:
        context = "Context:\n" + context
    return PROMPT_TEMPLATE.format(
        labels=", ".join(taxonomy(record.taxonomy)), context=context, text=record.text
    )


def clip_rationale(text: str) -> str:
    """At most MAX_RATIONALE_WORDS words, on one line."""
    return " ".join(text.split()[:MAX_RATIONALE_WORDS])


def render_target(labels: list[str], vad: VAD | tuple[float, float, float], rationale: str) -> str:
    """The one-line JSON answer; VAD always printed with two decimals, e.g. 0.50."""
    if not isinstance(vad, VAD):
        vad = VAD(v=vad[0], a=vad[1], d=vad[2])
    v, a, d = (f"{x:.2f}" for x in vad.as_tuple())
    return (
        '{"labels":' + json.dumps(list(labels), ensure_ascii=False, separators=(",", ":"))
        + f',"vad":{{"v":{v},"a":{a},"d":{d}}}'
        + ',"rationale":' + json.dumps(clip_rationale(rationale), ensure_ascii=False) + "}"
    )


# ---------------------------------------------------------------------------------------------
# Tail-scanning parser
# ---------------------------------------------------------------------------------------------


class Answer(BaseModel):
    """A model answer that passed the contract (labels normalized, VAD checked)."""

    model_config = ConfigDict(extra="ignore")
    labels: list[str]
    vad: VAD
    rationale: str

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any, info) -> list[str]:
        if not isinstance(value, list):
            raise PydanticCustomError("bad_labels", "labels must be a list of strings")
        if not value:
            raise PydanticCustomError("empty_labels", "labels is empty")
        if not all(isinstance(l, str) for l in value):
            raise PydanticCustomError("bad_labels", "every label must be a string")
        norm = _dedupe(l.strip().lower() for l in value)
        allowed = TAXONOMIES[info.context["taxonomy"]]
        unknown = [l for l in norm if l not in allowed]
        if unknown:
            raise PydanticCustomError("unknown_label", "not in the taxonomy: {unknown}", {"unknown": unknown})
        return norm

    @field_validator("vad", mode="before")
    @classmethod
    def _vad(cls, value: Any) -> Any:
        if not isinstance(value, dict) or set(value) != {"v", "a", "d"}:
            raise PydanticCustomError("bad_vad", "vad must be an object with exactly v, a, d")
        for key, x in value.items():
            # A JSON number only: no strings, booleans, null, NaN or Infinity. The range test
            # comes first: it is exact for huge ints, which float() (and isfinite) overflow on.
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x <= 1 or not math.isfinite(x):
                # the value goes in pre-rendered as ASCII: pydantic's templates know no {x!r}
                # and cannot carry a lone surrogate
                raise PydanticCustomError("bad_vad", "vad.{key} must be a number in [0, 1], got {x}",
                                          {"key": key, "x": ascii(x)[:60]})
        return value

    @field_validator("rationale", mode="before")
    @classmethod
    def _rationale(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise PydanticCustomError("bad_rationale", "rationale must be a string")
        if why := lone_surrogate(value):  # from a \ud800 JSON escape; no UTF-8 row can hold it
            raise PydanticCustomError("bad_rationale", "rationale has a {why}", {"why": why})
        return value


class ParseResult(BaseModel):
    parse_ok: bool
    labels: list[str] | None = None
    vad: VAD | None = None
    rationale: str | None = None
    error: str | None = None  # machine-readable reason, None when parse_ok
    detail: str | None = None  # human-readable explanation

    def row(self) -> dict[str, Any]:
        """The JSON-ready prediction fields (`vad` as {v,a,d} or None)."""
        return {
            "parse_ok": self.parse_ok,
            "labels": self.labels,
            "vad": self.vad.model_dump() if self.vad else None,
            "rationale": self.rationale,
            "error": self.error,
        }


class _JsonCount:
    """The counting rule every reader of an answer shares, one character at a time: braces count
    outside strings, quotes only matter inside an object, and a backslash in a string escapes the
    next character. So prose and code fences around the answer are ignored."""

    __slots__ = ("depth", "in_string", "escape")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = self.escape = False

    def step(self, ch: str) -> str | None:
        """"{" or "}" when `ch` opens or closes an object (depth already updated), else None."""
        if self.in_string:
            if self.escape:
                self.escape = False
            elif ch == "\\":
                self.escape = True
            elif ch == '"':
                self.in_string = False
        elif ch == "{":
            self.depth += 1
            return "{"
        elif ch == "}" and self.depth:
            self.depth -= 1
            return "}"
        elif ch == '"' and self.depth:
            self.in_string = True
        return None


def _looks_json(first: str) -> bool:
    """An object looks like JSON when the first non-space character after its "{" is a quote
    (or its own "}": empty). A ``{prose}`` span does not."""
    return first in ('"', "}")


def find_last_object(raw: str) -> tuple[str | None, str | None]:
    """Return (json_text, None) for the last complete balanced {...} in `raw`, or (None, reason).

    Counting follows `_JsonCount`. The last JSON-looking object (`_looks_json`) to close wins, and
    there is no fallback to earlier ones. A generation that ends inside an object that looks like
    JSON (its "{" followed by a quote) was truncated: reason `unbalanced`.
    """
    count = _JsonCount()
    # Linear in len(raw), whatever it holds (`parse` takes any file): an open "{" learns the first
    # non-space character after it as the scan reaches it, instead of re-slicing the text after
    # it (quadratic for millions of unmatched "{"). Only the newest "{" can be waiting for it:
    # the next "{" is itself a non-space character.
    starts: list[int] = []
    firsts: list[str] = []  # the first non-space character after each of `starts` ("" until seen)
    waiting = False
    last = last_json = None  # (start, end) of the latest balanced span / JSON-looking span
    for pos, ch in enumerate(raw):
        if waiting and not ch.isspace():
            firsts[-1] = ch
            waiting = False
        event = count.step(ch)
        if event == "{":
            starts.append(pos)
            firsts.append("")
            waiting = True
        elif event == "}":
            start, first = starts.pop(), firsts.pop()
            last = (start, pos + 1)  # closes after every earlier span: the latest wins
            if _looks_json(first):
                last_json = last
    if '"' in firsts:
        return None, "unbalanced"
    if last is None:
        return None, ("unbalanced" if starts else "no_json")
    # Prefer the last span that looks like a JSON object; a lone {prose} span is invalid JSON.
    start, end = last_json or last
    return raw[start:end], None


class JsonCloseScanner:
    """Has the answer's JSON object closed yet? `find_last_object`'s rule, fed as text arrives
    (decoders feed each generated token's text): the first outermost object that looks like JSON
    to close ends the answer; a ``{prose}`` span does not."""

    __slots__ = ("count", "closed", "pending", "looks_json")

    def __init__(self) -> None:
        self.count = _JsonCount()
        self.closed = self.pending = self.looks_json = False

    def feed(self, text: str) -> bool:
        if self.closed:
            return True
        for ch in text:
            if self.pending:  # the first non-space character after an outermost "{"
                if ch.isspace():
                    continue
                self.pending = False
                self.looks_json = _looks_json(ch)
            event = self.count.step(ch)
            if event == "{":
                self.pending = self.count.depth == 1
            elif event == "}" and self.count.depth == 0 and self.looks_json:
                self.closed = True
                return True
        return False


def parse_output(raw: Any, taxonomy_name: str) -> ParseResult:
    """Decide ParseOK for one raw generation. Never raises on any input string."""
    taxonomy(taxonomy_name)  # a wrong taxonomy name is a caller bug: fail loudly
    if not isinstance(raw, str):
        return ParseResult(parse_ok=False, error="no_json", detail="output is not a string")
    try:
        text, reason = find_last_object(raw)
        if text is None:
            return ParseResult(parse_ok=False, error=reason)
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return ParseResult(parse_ok=False, error="invalid_json", detail=str(exc)[:200])
        try:
            ans = Answer.model_validate(obj, context={"taxonomy": taxonomy_name})
        except ValidationError as exc:
            err = exc.errors()[0]
            kind = err["type"]
            if kind == "missing":
                kind = "missing_field"
            elif kind in ("model_type", "dict_type"):
                kind = "invalid_json"
            field = ".".join(str(p) for p in err["loc"])
            return ParseResult(parse_ok=False, error=kind, detail=_printable(f"{field}: {err['msg']}")[:300])
        return ParseResult(parse_ok=True, labels=ans.labels, vad=ans.vad, rationale=ans.rationale)
    except Exception as exc:  # noqa: BLE001 - the contract promises no exception escapes
        return ParseResult(parse_ok=False, error="internal", detail=_printable(f"{type(exc).__name__}: {exc}")[:300])


def _printable(text: str) -> str:
    """`text` with lone surrogates written as \\udXXX escapes, so a detail can always be written."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
