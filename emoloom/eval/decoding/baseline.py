"""transformers' KV-cached batched generate under the same stop rule: the speed bench's outside
baseline. Pure greedy like the reference; not guaranteed to match the KV-off outputs."""
from __future__ import annotations

from typing import Sequence

from .decoders import Decoder, Generation, _Row
from .greedy import pure_greedy
from .prompts import PreparedPrompt
from .stop import JsonStoppingCriteria
from .tokens import decode_text

__all__ = ["hf_generate_cached"]


def hf_generate_cached(model, tokenizer, prompts: Sequence[PreparedPrompt], max_new_tokens: int,
                       batch_size: int = 16, counts: dict | None = None) -> list[Generation]:
    """transformers generate(use_cache=True), batched with left padding, same stop rule.
    `counts["positions"]` (when given) is increased by the token positions computed: each batch's
    padded prompt once, then one position per row and cached step - the KV-off decoders'
    `Forward.positions`, for the same comparison of compute."""
    import torch
    from transformers import StoppingCriteriaList

    dec = Decoder(model, tokenizer, "reference", max_new_tokens=max_new_tokens)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].ids))
    out: dict[int, Generation] = {}
    dev = dec.fwd.device
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            width = max(len(prompts[i].ids) for i in idx)
            ids = torch.full((len(idx), width), dec.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for b, i in enumerate(idx):
                p = prompts[i].ids
                ids[b, width - len(p):] = torch.tensor(p)
                mask[b, width - len(p):] = 1
            with pure_greedy(model, sorted(dec.eos), dec.pad_id, max_new_tokens, use_cache=True) as config:
                seqs = model.generate(ids.to(dev), attention_mask=mask.to(dev), generation_config=config,
                                      stopping_criteria=StoppingCriteriaList([JsonStoppingCriteria(dec.texts, width)]))
            if counts is not None:  # the prefill yields the first token; every later one is a cached step
                steps = seqs.shape[1] - width
                counts["positions"] = counts.get("positions", 0) + len(idx) * (width + max(steps - 1, 0))
            for b, i in enumerate(idx):
                row = _Row(i, prompts[i].ids, "goemotions")
                for tok in seqs[b, width:].tolist():
                    dec._push(row, tok)
                    row.forwards += 1
                    if row.stop:
                        break
                out[i] = Generation(row.gen, decode_text(tokenizer, row.gen), row.stop or "max_new_tokens",
                                    row.forwards)
    return [out[i] for i in range(len(prompts))]
