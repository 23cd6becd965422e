"""A minimal supervised fine-tuning loop for the eval bench and the eval tests only.

The built-in tiny models are random-init: their greedy outputs never close a JSON object, so
decoding speed would be measured on unrealistically long outputs and the skeleton drafts would
never be accepted. A minute of SFT on synthetic records teaches them the contract's shape. This
is not the project's trainer (emoloom.train): no Ray, no config, no checkpoints.
"""
from __future__ import annotations

import random
import time
from typing import Sequence

from emoloom.contract import VAD, Record, render_target
from emoloom.labels import anchor


def target_for(record: Record) -> str:
    """The answer the project's trainer writes for a record: lexicon-weak VAD (gold kept) and the
    lexicon-cue rationale (`emoloom.lexicon`), so the outputs look like a trained candidate's."""
    from emoloom.lexicon import load_lexicon, rationale_for, with_weak_vad

    lexicon = load_lexicon(None)
    rec = with_weak_vad(record, lexicon)
    vad = rec.vad.rounded() if rec.vad else VAD(**dict(zip("vad", anchor(rec.labels) or (0.5, 0.5, 0.5))))
    return render_target(rec.labels, vad, rationale_for(rec.text, rec.labels, lexicon))


def smoke_sft(model, tokenizer, records: Sequence[Record], *, steps: int = 200, seconds: float | None = None,
              lr: float = 3e-3, batch_size: int = 8, lora: bool = True, lora_r: int = 16, seed: int = 0,
              log=None):
    """Fine-tune `model` on (prompt -> contract answer + EOS) with loss on the answer only.

    Stops after `steps` steps or `seconds` seconds, whichever comes first. With `lora` the model
    is wrapped by peft (save the adapter with `save_pretrained`); returns the trained model.
    """
    import torch

    from emoloom.models import prompt_ids

    torch.manual_seed(seed)
    rng = random.Random(seed)
    if lora:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0,
                         target_modules=_targets(model), task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)
    examples = []
    for r in records:
        if not r.labels:
            continue
        p = prompt_ids(tokenizer, r)
        t = tokenizer(target_for(r), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        examples.append((p, t))
    if not examples:
        raise ValueError("no labelled records to train on")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.train()
    start = time.time()
    step = 0
    while step < steps and (seconds is None or time.time() - start < seconds):
        batch = rng.sample(examples, min(batch_size, len(examples)))
        width = max(len(p) + len(t) for p, t in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (p, t) in enumerate(batch):  # right padding: positions start at 0 for every row
            seq = p + t
            ids[i, :len(seq)] = torch.tensor(seq)
            labels[i, len(p):len(seq)] = torch.tensor(t)
            mask[i, :len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if log and (step % 25 == 0 or step == 1):
            log(f"sft step {step} loss {loss.item():.3f} ({time.time() - start:.0f}s)")
    model.eval()
    return model


def _targets(model) -> list[str] | str:
    """The project's LoRA targets plus lm_head: a random-init base keeps near-flat logits when
    its output layer is frozen (the final norm bounds the hidden state), so it is adapted too."""
    from emoloom.models import lora_targets

    targets = lora_targets(model.config.model_type)
    return targets + ["lm_head"] if isinstance(targets, list) else targets
