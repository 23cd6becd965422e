"""The terms of the EmoLoom training objective (pure functions on tensors).

    L = w_sft * L_sft + w_emo * L_emotion + w_vad * L_vad + w_vp * L_vad_preserve
        + w_app * L_appraisal + w_pol * L_polarity

with the weights of `TrainConfig.loss` (a weight of 0 switches its term off). Notation: a batch
of B examples; h_i the LM's last hidden state at the last prompt token of example i; y_i its VAD
target; p_theta the LM's next-token distribution.

* L_sft: mean token cross-entropy on the target line (prompt and padding masked with -100).
* L_emotion: binary cross-entropy of the taxonomy's emotion head on h_i against the multi-hot
  gold labels, averaged over labels then over examples (one head per taxonomy).
* L_vad: 1/3 ||sigmoid(W h_i + b) - y_i||^2, averaged over examples with a VAD target.
* L_vad_preserve: the VAD implied by the generated rationale must match y_i. With E[v] the
  lexicon VAD of vocabulary token v and Lex the tokens that have a lexicon entry (all others are
  masked out), the rationale's implied VAD is the expected lexicon VAD of its tokens under the
  model's token distributions at the rationale positions t:

      R_i = sum_t sum_{v in Lex} p_theta(v | x_i, y_<t) E[v]  /  sum_t sum_{v in Lex} p_theta(v | x_i, y_<t)
      L_vad_preserve = mean_i 1/3 ||R_i - y_i||^2

  R_i is a weighted mean of lexicon VADs, so it stays in [0, 1] and its gradient is bounded. It
  is computed in log space (a softmax over all (t, v) pairs of example i), so tiny masses do not
  underflow.
* L_appraisal: 1/4 ||sigmoid(A h_i + c) - s_i||^2 against the external appraisal classifier's
  scores s_i (`appraisal.py`).
* L_polarity: where TextBlob is confident (|pol_i| >= tau), the VAD head's valence should lie on
  the same side of 0.5:  mean softplus(-gamma * sign(pol_i) * (v_hat_i - 0.5)).  It is
  log(2) at v_hat = 0.5 and falls as the valence moves to the polarity's side.

Every function returns a 0-dim tensor; an empty mask gives 0 (with a graph) so a term can be
switched on for batches that happen to lack its targets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy on positions whose next-token label is not -100."""
    shift_labels = labels[:, 1:]
    keep = shift_labels != -100
    if not keep.any():
        return logits.sum() * 0.0
    picked = logits[:, :-1][keep].float()
    return F.cross_entropy(picked, shift_labels[keep])


def emotion_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example mean BCE over labels, summed (the caller averages over the whole batch)."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").mean(dim=1).sum()


def vad_l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return _masked_mean(((pred.float() - target.float()) ** 2).mean(dim=1), mask)


def appraisal_l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return _masked_mean(((pred.float() - target.float()) ** 2).mean(dim=1), mask)


def polarity_agreement(valence: torch.Tensor, polarity: torch.Tensor, threshold: float,
                       scale: float = 10.0) -> torch.Tensor:
    confident = polarity.abs() >= threshold
    margin = torch.sign(polarity.float()) * (valence.float() - 0.5)
    return _masked_mean(F.softplus(-scale * margin), confident)


def rationale_vad(logits: torch.Tensor, rationale_mask: torch.Tensor, token_ids: torch.Tensor,
                  token_vad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, has) of the module docstring: R (B, 3) implied VAD, has (B,) examples with a rationale.

    logits (B, L, V); rationale_mask (B, L) marks the positions whose logits predict a rationale
    token; token_ids (M,) the lexicon tokens, token_vad (M, 3) their VAD.
    """
    b = logits.shape[0]
    rows = rationale_mask.nonzero(as_tuple=False)  # (N, 2): example, position
    r = torch.full((b, 3), 0.5, device=logits.device)
    has = torch.zeros(b, dtype=torch.bool, device=logits.device)
    if rows.numel() == 0 or token_ids.numel() == 0:
        return r + logits.sum() * 0.0, has
    logp = torch.log_softmax(logits[rows[:, 0], rows[:, 1]].float(), dim=-1)[:, token_ids]  # (N, M)
    example = rows[:, 0]
    # per-example log normaliser over all (t, v) pairs: logsumexp within each example's rows
    row_lse = torch.logsumexp(logp, dim=1)  # (N,)
    ex_max = torch.full((b,), float("-inf"), device=logits.device).scatter_reduce(0, example, row_lse, "amax")
    ex_sum = torch.zeros(b, device=logits.device).index_add(0, example, torch.exp(row_lse - ex_max[example]))
    ex_lse = ex_max + torch.log(ex_sum.clamp(min=1e-30))
    weights = torch.exp(logp - ex_lse[example].unsqueeze(1))  # sums to 1 over each example's (t, v)
    # .float(): under bf16 autocast the matmul comes back in bf16; the sums here stay fp32
    implied = torch.zeros(b, 3, device=logits.device).index_add(0, example, (weights @ token_vad.float()).float())
    has[example] = True
    return torch.where(has.unsqueeze(1), implied, r), has


def vad_preserving(logits: torch.Tensor, rationale_mask: torch.Tensor, token_ids: torch.Tensor,
                   token_vad: torch.Tensor, target: torch.Tensor, has_vad: torch.Tensor) -> torch.Tensor:
    implied, has = rationale_vad(logits, rationale_mask, token_ids, token_vad)
    return _masked_mean(((implied - target.float()) ** 2).mean(dim=1), has & has_vad)


def token_vad_table(tokenizer, lexicon, vocab_size: int | None = None,
                    min_chars: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(token_ids, vad) for the vocabulary tokens that are lexicon words.

    A token counts when its decoded text, stripped of the byte-level space marker and lower-cased,
    is alphabetic, at least `min_chars` long, and found by `lexicon.lookup` (its light
    lemmatisation included). Sub-word pieces that happen to spell a word ("sad" inside "sadly")
    count as that word: an approximation a word-level lexicon cannot avoid.
    """
    size = min(vocab_size or len(tokenizer), len(tokenizer))
    ids, values = [], []
    texts = tokenizer.batch_decode([[i] for i in range(size)])
    for token_id, text in enumerate(texts):
        text = text.strip().lower()
        if len(text) < min_chars or not text.isalpha():
            continue
        vad = lexicon.lookup(text)
        if vad is not None:
            ids.append(token_id)
            values.append(vad)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(values, dtype=torch.float32).reshape(-1, 3)
