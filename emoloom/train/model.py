"""The trained module: a (LoRA) causal LM plus the auxiliary heads, computing the whole objective.

One nn.Module holds everything that trains, so DeepSpeed / DDP wrap a single module and its
forward returns the weighted total with every term kept apart for logging (`losses.py` has the
formulas).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from emoloom.labels import taxonomy as labels_of
from emoloom.train import losses
from emoloom.train.heads import EmoHeads

TERMS = ("sft", "emotion", "vad", "vad_preserve", "appraisal", "polarity")


class EmoModel(nn.Module):
    def __init__(self, lm: nn.Module, heads: EmoHeads, loss_cfg, lex_ids: torch.Tensor, lex_vad: torch.Tensor):
        super().__init__()
        self.lm = lm
        self.heads = heads
        self.weights = {t: float(getattr(loss_cfg, t)) for t in TERMS}
        self.polarity_threshold = float(loss_cfg.polarity_threshold)
        self.polarity_scale = float(loss_cfg.polarity_scale)
        self.register_buffer("lex_ids", lex_ids, persistent=False)
        self.register_buffer("lex_vad", lex_vad, persistent=False)

    def enabled(self) -> list[str]:
        return [t for t in TERMS if self.weights[t] > 0]

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, L, V), hidden state at the last prompt token (B, H))."""
        out = self.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      output_hidden_states=True, use_cache=False)
        last = out.hidden_states[-1]
        h = last[torch.arange(last.shape[0], device=last.device), batch["prompt_end"]]
        return out.logits, h

    def emotion_outputs(self, h: torch.Tensor, batch: dict) -> tuple[torch.Tensor, list[tuple[int, str, torch.Tensor]]]:
        """(summed per-example BCE, [(row, taxonomy, logits row)]) over the batch's taxonomies."""
        total = h.sum() * 0.0
        rows: list[tuple[int, str, torch.Tensor]] = []
        for k, tax in enumerate(self.heads.taxonomies):
            idx = (batch["taxonomy"] == k).nonzero(as_tuple=True)[0]
            if idx.numel() == 0:
                continue
            logits = self.heads.emotion_logits(h[idx], tax)
            targets = batch["label_targets"][idx, : logits.shape[1]]
            total = total + losses.emotion_bce(logits, targets)
            rows += [(int(i), tax, logits[j]) for j, i in enumerate(idx.tolist())]
        return total, rows

    def forward(self, batch: dict) -> dict:
        w = self.weights
        logits, h = self.encode(batch)
        b = h.shape[0]
        terms: dict[str, torch.Tensor] = {}
        pred_keys: list[str] = []
        if w["sft"] > 0:
            terms["sft"] = losses.sft_loss(logits, batch["labels"])
        if w["emotion"] > 0:
            bce, rows = self.emotion_outputs(h, batch)
            terms["emotion"] = bce / b
            with torch.no_grad():
                pred_keys = [f"{tax}:{labels_of(tax)[int(row.argmax())]}" for _, tax, row in rows]
        if w["vad"] > 0 or w["polarity"] > 0:
            vad = self.heads.vad_pred(h)
            if w["vad"] > 0:
                terms["vad"] = losses.vad_l2(vad, batch["vad"], batch["has_vad"])
            if w["polarity"] > 0:
                terms["polarity"] = losses.polarity_agreement(vad[:, 0], batch["polarity"], self.polarity_threshold,
                                                              self.polarity_scale)
        if w["vad_preserve"] > 0:
            terms["vad_preserve"] = losses.vad_preserving(logits, batch["rationale_mask"], self.lex_ids, self.lex_vad,
                                                          batch["vad"], batch["has_vad"])
        if w["appraisal"] > 0:
            terms["appraisal"] = losses.appraisal_l2(self.heads.appraisal_pred(h), batch["appraisal"],
                                                     batch["has_appraisal"])
        total = sum(w[t] * v for t, v in terms.items()) if terms else logits.sum() * 0.0
        return {"loss": total, "terms": {t: v.detach() for t, v in terms.items()}, "pred_keys": pred_keys}


@torch.no_grad()
def dev_metrics(model: EmoModel, batches) -> dict[str, float]:
    """Cheap dev metrics from the heads (and the SFT loss) over already-collated dev batches.

    dev_head_macro_f1: per taxonomy, multi-label predictions (sigmoid >= 0.5, the top label when
    none passes), F1 per label over labels occurring in gold or prediction, macro-averaged; then
    the mean over taxonomies. dev_vad_rmse: RMSE of the VAD head over all three dimensions.
    """
    was_training = model.training
    model.eval()
    counts: dict[tuple[str, int], list[int]] = {}  # (taxonomy, label) -> [tp, fp, fn]
    sq_err = n_vad = 0.0
    sft_sum = sft_n = 0.0
    for batch in batches:
        logits, h = model.encode(batch)
        # the dev SFT loss is cheap (the logits are there) and tracks the contract even when w_sft = 0
        n_target = int((batch["labels"][:, 1:] != -100).sum())
        sft_sum += float(losses.sft_loss(logits, batch["labels"])) * n_target
        sft_n += n_target
        _, rows = model.emotion_outputs(h, batch)
        for i, tax, row in rows:
            prob = torch.sigmoid(row.float())
            pred = set((prob >= 0.5).nonzero(as_tuple=True)[0].tolist()) or {int(prob.argmax())}
            gold = set(batch["label_targets"][i, : row.shape[0]].nonzero(as_tuple=True)[0].tolist())
            for label in pred | gold:
                c = counts.setdefault((tax, label), [0, 0, 0])
                c[0] += label in pred and label in gold
                c[1] += label in pred and label not in gold
                c[2] += label in gold and label not in pred
        vad = model.heads.vad_pred(h).float()
        mask = batch["has_vad"]
        sq_err += float(((vad - batch["vad"].float()) ** 2)[mask].sum())
        n_vad += 3 * int(mask.sum())
    if was_training:
        model.train()
    per_tax: dict[str, list[float]] = {}
    for (tax, _), (tp, fp, fn) in counts.items():
        per_tax.setdefault(tax, []).append(2 * tp / max(1, 2 * tp + fp + fn))
    f1 = [sum(v) / len(v) for v in per_tax.values()]
    return {
        "dev_head_macro_f1": sum(f1) / len(f1) if f1 else 0.0,
        "dev_vad_rmse": math.sqrt(sq_err / n_vad) if n_vad else float("nan"),
        "dev_sft_loss": sft_sum / sft_n if sft_n else float("nan"),
    }
