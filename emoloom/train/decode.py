"""Load a trained run folder and decode greedily (KV-off), for smoke checks of a training run.

The evaluation proper lives in `emoloom.eval`; this is the small piece the training benchmark
and tests need: base + adapter from `<out>/adapter`, the heads, and greedy generation that stops
at eos or as soon as the answer's JSON object is closed.
"""
from __future__ import annotations

from pathlib import Path


def load_trained(out: str | Path):
    """(peft model in eval mode, tokenizer, heads) of a run folder written by `fit`."""
    import yaml
    from peft import PeftModel

    from emoloom.models import ModelSpec, load_base
    from emoloom.train.heads import load_heads

    out = Path(out)
    spec = ModelSpec.model_validate(yaml.safe_load((out / "config.yaml").read_text())["model"])
    loaded = load_base(spec)
    model = PeftModel.from_pretrained(loaded.model, str(out / "adapter"))
    model.eval()
    return model, loaded.tokenizer, load_heads(out / "heads.pt")


def greedy_generate(model, tokenizer, records, *, max_new_tokens: int = 80, batch_size: int = 16) -> list[str]:
    """Greedy continuations (use_cache=False, do_sample=False) of the contract prompts of `records`."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from emoloom.contract import find_last_object
    from emoloom.train.examples import prompt_ids

    class ClosedJson(StoppingCriteria):
        """Per sequence: stop once the generated text holds a complete JSON object."""

        def __init__(self, start: int):
            self.start = start

        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
            done = [find_last_object(t)[0] is not None for t in texts]
            return torch.tensor(done, device=input_ids.device)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outputs: list[str] = []
    for i in range(0, len(records), batch_size):
        ids = [prompt_ids(tokenizer, r) for r in records[i:i + batch_size]]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])  # left padding
        attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        with torch.no_grad():
            gen = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                                 do_sample=False, use_cache=False, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id,
                                 stopping_criteria=StoppingCriteriaList([ClosedJson(width)]))
        outputs += tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
    return outputs


def parse_rate(outputs: list[str], records) -> float:
    """Share of generations that pass `contract.parse_output` for their record's taxonomy."""
    from emoloom.contract import parse_output

    ok = sum(parse_output(o, r.taxonomy).parse_ok for o, r in zip(outputs, records))
    return ok / max(1, len(records))
