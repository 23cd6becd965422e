"""Token texts per tokenizer, and the one call that turns generated ids into the raw output."""
from __future__ import annotations

from typing import Callable, Sequence

__all__ = ["per_tokenizer", "token_texts", "decode_text"]

_PER_TOKENIZER: dict[tuple, tuple[object, object]] = {}


def per_tokenizer(tokenizer, key: tuple, build: Callable[[], object]):
    """`build()` once per tokenizer object and `key` (the object itself is checked, so a new
    tokenizer that reuses a freed one's id is not served the old value)."""
    hit = _PER_TOKENIZER.get((id(tokenizer), *key))
    if hit is None or hit[0] is not tokenizer:
        hit = _PER_TOKENIZER[(id(tokenizer), *key)] = (tokenizer, build())
    return hit[1]


def token_texts(tokenizer) -> list[str]:
    """Decoded text of every token id ("" for special tokens); cached per tokenizer object."""
    return per_tokenizer(tokenizer, ("texts",), lambda: tokenizer.batch_decode(
        [[i] for i in range(len(tokenizer))], skip_special_tokens=True, clean_up_tokenization_spaces=False))


def decode_text(tokenizer, ids: Sequence[int]) -> str:
    """The raw output string of generated ids (the same call for every decoder)."""
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
