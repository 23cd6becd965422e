"""Auxiliary heads on the LM's last hidden state at the end of the prompt.

* emotion:   one linear layer per taxonomy present in training (nn.ModuleDict), multi-label logits;
* vad:       linear -> sigmoid, (valence, arousal, dominance) in [0, 1];
* appraisal: linear -> sigmoid, the four appraisal scores of `appraisal.DIMENSIONS`.

The heads train with the LoRA adapter (their gradients reach the adapter through the hidden
state) and are saved next to it as `heads.pt`; they are cheap dev-time predictors (the screen's
early stopping reads their metrics) and are not needed for contract generation.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from emoloom.labels import taxonomy as labels_of
from emoloom.train.appraisal import DIMENSIONS

HEADS_FORMAT = 1


class EmoHeads(nn.Module):
    def __init__(self, hidden_size: int, taxonomies: list[str]):
        super().__init__()
        self.hidden_size = hidden_size
        self.taxonomies = list(taxonomies)
        self.emotion = nn.ModuleDict({t: nn.Linear(hidden_size, len(labels_of(t))) for t in self.taxonomies})
        self.vad = nn.Linear(hidden_size, 3)
        self.appraisal = nn.Linear(hidden_size, len(DIMENSIONS))

    def _in(self, h: torch.Tensor) -> torch.Tensor:
        return h.to(self.vad.weight.dtype)  # a bf16 LM may feed fp32 heads (or the reverse)

    def emotion_logits(self, h: torch.Tensor, taxonomy: str) -> torch.Tensor:
        return self.emotion[taxonomy](self._in(h))

    def vad_pred(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.vad(self._in(h)))

    def appraisal_pred(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.appraisal(self._in(h)))

    def save(self, path: str | Path) -> None:
        state = {k: v.detach().to("cpu", torch.float32) for k, v in self.state_dict().items()}
        torch.save({"format": HEADS_FORMAT, "hidden_size": self.hidden_size, "taxonomies": self.taxonomies,
                    "appraisal_dimensions": list(DIMENSIONS), "state_dict": state}, path)


def load_heads(path: str | Path, map_location: str = "cpu") -> EmoHeads:
    """Heads saved by `EmoHeads.save` (heads.pt of a training run)."""
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if blob.get("format") != HEADS_FORMAT:
        raise ValueError(f"{path}: unknown heads format {blob.get('format')!r}")
    heads = EmoHeads(blob["hidden_size"], blob["taxonomies"])
    heads.load_state_dict(blob["state_dict"])
    return heads
