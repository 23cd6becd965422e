"""Rung signals: what ASHA compares after each epoch, and the teacher-forced NLL signal.

    values = {"decoded": 0.31, "nll": 4.2, "head_f1": 0.55}     # measured after an epoch
    report = rung_report(values, signal="nll", mode="max")
    report["rung_value"]   # -4.2: what ASHA receives (larger is better under mode max)
    report["rung.nll"]     # 4.2: every signal is logged as measured, whatever the choice

* `decoded`: the space's metric on `eval.epoch_limit` rows decoded KV-off (the objective's own
  definition, on few rows: it costs a decode per row);
* `nll`: mean over the evaluation sample of the summed negative log-likelihood (nats) of the
  gold answer's label part (`{"labels":[...]`), teacher-forced: one forward per row, no decoding,
  so every row of the sample is used; lower is better;
* `head_f1`: the emotion head's Macro-F1 on the training-time dev set (`data.dev_size` rows),
  computed by the training loop each epoch anyway; it says nothing about the answer the LM writes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

__all__ = ["SIGNALS", "RungSignal", "label_nll", "label_part", "oriented", "rung_report"]


@dataclass(frozen=True)
class RungSignal:
    name: str
    # "metric": as the space's metric (ASHA's mode is the space's); "higher"/"lower": fixed sense
    direction: Literal["metric", "higher", "lower"]
    about: str


SIGNALS: dict[str, RungSignal] = {s.name: s for s in (
    RungSignal("decoded", "metric", "the space's metric on eval.epoch_limit rows decoded KV-off"),
    RungSignal("nll", "lower", "teacher-forced NLL of the gold label part on the evaluation sample"),
    RungSignal("head_f1", "higher", "the emotion head's Macro-F1 on the training dev set"),
)}


def oriented(value: float, signal: str, mode: str) -> float:
    """`value` of `signal` turned so that the space's `mode` prefers the better candidate (an NLL
    is negated under mode max); non-finite values become the worst possible."""
    s = SIGNALS[signal]
    sign = 1.0 if s.direction == "metric" or (s.direction == "higher") == (mode == "max") else -1.0
    if value is None or not math.isfinite(value):
        return -math.inf if mode == "max" else math.inf
    return sign * float(value)


def rung_report(values: Mapping[str, float], signal: str, mode: str) -> dict[str, float]:
    """The epoch report's rung part: `rung.<name>` for every measured signal, as measured, and
    `rung_value` (what ASHA compares: the chosen signal, oriented to the space's mode)."""
    if signal not in values:
        raise KeyError(f"rung signal {signal!r} was not measured this epoch (have {sorted(values)})")
    out = {f"rung.{k}": float(v) for k, v in values.items()}
    out["rung_value"] = oriented(values[signal], signal, mode)
    return out


def label_part(target: str) -> int:
    """Characters of the gold answer line that carry its labels: `{"labels":[...]`."""
    return target.index(',"vad":')


def label_nll(model, tokenizer, records: Sequence, *, batch_size: int = 16, max_length: int = 1024) -> float:
    """Mean over `records` of the summed NLL (nats) of each gold answer's label part given its
    prompt, tokenized as training tokenizes them (prompt ids, then the answer without special
    tokens). Prompts too long for `max_length` lose their start, as in KV-off decoding."""
    import torch

    from emoloom.models import prompt_ids
    from emoloom.train.examples import target_text

    rows = []
    for r in records:
        target = target_text(r, "")
        enc = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
        end = label_part(target)
        t_ids = list(enc["input_ids"])
        scored = sum(1 for s, _ in enc["offset_mapping"] if s < end)
        p_ids = prompt_ids(tokenizer, r)[-max(1, max_length - len(t_ids)):]
        rows.append((p_ids + t_ids, len(p_ids), scored))
    if not rows:
        return float("nan")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            length = max(len(ids) for ids, _, _ in chunk)
            ids = torch.full((len(chunk), length), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, (seq, _, _) in enumerate(chunk):
                ids[j, :len(seq)] = torch.tensor(seq)
                mask[j, :len(seq)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for j, (seq, p_len, scored) in enumerate(chunk):
                pos = torch.arange(p_len - 1, p_len - 1 + scored, device=logp.device)  # logits predicting each token
                gold = ids[j, p_len:p_len + scored].to(logp.device)
                total -= float(logp[j, pos, gold].sum())
    return total / len(rows)
