"""The stop rule every decoder shares: EOS, or the answer's JSON object closing.

The close rule lives with the parser (`contract.JsonCloseScanner`, the rule of
`contract.find_last_object` fed as text arrives); `JsonStoppingCriteria` wraps it for
transformers' `generate`.
"""
from __future__ import annotations

from emoloom.contract import JsonCloseScanner

__all__ = ["JsonStoppingCriteria"]


def JsonStoppingCriteria(texts: list[str], prompt_len: int):
    """A transformers StoppingCriteria: a row is done once its generated JSON object closes."""
    import torch
    from transformers import StoppingCriteria

    class _Stop(StoppingCriteria):
        def __init__(self) -> None:
            self.scanners: list[JsonCloseScanner] | None = None
            self.seen = prompt_len

        def __call__(self, input_ids, scores, **kwargs):
            if self.scanners is None:
                self.scanners = [JsonCloseScanner() for _ in range(input_ids.shape[0])]
            new = input_ids[:, self.seen:].tolist()
            self.seen = input_ids.shape[1]
            done = [any(s.feed(texts[t] if t < len(texts) else "") for t in row) or s.closed
                    for s, row in zip(self.scanners, new)]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return _Stop()
