"""Prompt encoding and left truncation to the model's window.

Prompts longer than the model window (minus `max_new_tokens`) are cut from the left of their
text part - oldest context turns first, then the start of the text - keeping the instruction and
the answer cue; the prediction carries ``truncated: true``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from emoloom.contract import Record, render_prompt

__all__ = ["PreparedPrompt", "model_window", "prepare_prompt"]


@dataclass
class PreparedPrompt:
    text: str  # the exact prompt string fed to the tokenizer
    ids: list[int]
    truncated: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def model_window(model, tokenizer=None) -> int:
    """Longest sequence the model takes (position embeddings), else the tokenizer's limit."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(n, int) and n > 0:
        return n
    n = getattr(tokenizer, "model_max_length", None)
    return n if isinstance(n, int) and 0 < n < 1_000_000 else 2048


def _render(tokenizer, record: Record) -> tuple[str, list[int]]:
    from emoloom.models import encode_prompt, format_prompt

    text = format_prompt(tokenizer, render_prompt(record))
    return text, encode_prompt(tokenizer, text)


def prepare_prompt(record: Record, tokenizer, max_tokens: int) -> PreparedPrompt:
    """The prompt of `record` in at most `max_tokens` tokens (see the module doc on truncation)."""
    text, ids = _render(tokenizer, record)
    if len(ids) <= max_tokens:
        return PreparedPrompt(text, ids)
    rec = record
    while rec.context:  # oldest turns go first: they matter least for the last turn's emotion
        rec = rec.model_copy(update={"context": rec.context[1:]})
        text, ids = _render(tokenizer, rec)
        if len(ids) <= max_tokens:
            return PreparedPrompt(text, ids, truncated=True)
    _, fixed = _render(tokenizer, rec.model_copy(update={"text": ""}))
    text_ids = tokenizer(rec.text, add_special_tokens=False)["input_ids"]
    avail = min(len(text_ids), max_tokens - len(fixed))
    for _ in range(8):  # re-tokenizing at the cut can merge differently: shrink until it fits
        if avail <= 0:
            break
        kept = tokenizer.decode(text_ids[-avail:], skip_special_tokens=True).lstrip("\ufffd")
        text, ids = _render(tokenizer, rec.model_copy(update={"text": kept}))
        if len(ids) <= max_tokens:
            return PreparedPrompt(text, ids, truncated=True)
        avail -= len(ids) - max_tokens
    # Not even the instruction fits: keep the prompt's tail, where the answer cue is.
    text, ids = _render(tokenizer, rec.model_copy(update={"text": ""}))
    ids = ids[-max_tokens:] if max_tokens > 0 else []
    return PreparedPrompt(tokenizer.decode(ids), ids, truncated=True)
