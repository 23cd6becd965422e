"""Pure greedy by construction, and how close each greedy choice was.

`generate` fills every field a GenerationConfig leaves unset from ``model.generation_config``,
so a checkpoint shipping ``repetition_penalty``, ``no_repeat_ngram_size``, ``suppress_tokens``,
``bad_words_ids``, ``min_new_tokens`` or sampling settings would turn the reference into
something other than argmax. `pure_greedy` runs generate against a clean config that keeps only
the checkpoint's special token ids; `ignored_settings` lists what was left out, for the log and
metrics.json.

A greedy step is a *near tie* when its top-2 logit gap is within the resolution of the model's
dtype at that logit (`near_tie_limit`): rounding alone (bf16 kernels, batch shapes) could flip it.
"""
from __future__ import annotations

from contextlib import contextmanager

__all__ = ["SPECIAL_IDS", "ignored_settings", "pure_greedy", "near_tie_limit", "greedy_choices"]

# The only fields taken from the checkpoint: which ids end a row and which pad it.
SPECIAL_IDS = ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id")
# What generate returns or how it caches, not which tokens it picks.
_NOT_SETTINGS = {"transformers_version", "return_dict_in_generate", "use_cache", "cache_implementation",
                 "cache_config", "compile_config", "disable_compile"}


def ignored_settings(model) -> dict:
    """The checkpoint's generation settings a pure greedy decoder does not apply: every field of
    ``model.generation_config`` that differs from transformers' neutral default, special ids aside."""
    gc = getattr(model, "generation_config", None)
    if gc is None:
        return {}
    neutral = gc._get_default_generation_params()
    out = {}
    for key, value in sorted(gc.to_diff_dict().items()):
        if key in SPECIAL_IDS or key in _NOT_SETTINGS or key.startswith(("_", "output_")) or value is None:
            continue
        if key in neutral and neutral[key] == value:
            continue
        out[key] = value
    return out


@contextmanager
def pure_greedy(model, eos: list[int] | None, pad_id: int | None, max_new_tokens: int, use_cache: bool):
    """(GenerationConfig) for ``model.generate``: greedy, nothing inherited but special ids.

    The model's own generation_config is swapped for a clean one for the call, so transformers
    has nothing to fill unset fields from but its neutral defaults."""
    from transformers import GenerationConfig

    own = getattr(model, "generation_config", None)
    special = {k: getattr(own, k, None) for k in SPECIAL_IDS}
    special.update(eos_token_id=eos or None, pad_token_id=pad_id)
    clean = GenerationConfig(**{k: v for k, v in special.items() if v is not None})
    config = GenerationConfig(do_sample=False, num_beams=1, use_cache=use_cache, max_new_tokens=max_new_tokens,
                              **{k: v for k, v in special.items() if v is not None})
    model.generation_config = clean
    try:
        yield config
    finally:
        model.generation_config = own


def near_tie_limit(dtype) -> float:
    """Relative resolution of `dtype` (its machine epsilon): a gap under eps * |logit| is below
    what the dtype can tell apart at that logit."""
    import torch

    return float(torch.finfo(dtype).eps)


def greedy_choices(logits) -> tuple[list[int], list[float], list[float]]:
    """(greedy token, top-2 gap, |top-1|) per row of `logits` [N, V], as lists, from one top-2
    (a separate argmax cost as much again). An exact tie takes argmax's first index, as
    `generate` does; top-k leaves the order of equal values open."""
    top = logits.topk(2, dim=-1)
    gap = top.values[:, 0] - top.values[:, 1]
    tokens = top.indices[:, 0]
    if bool((gap == 0).any()):
        tokens = logits.argmax(-1)
    return tokens.tolist(), gap.tolist(), top.values[:, 0].abs().tolist()
