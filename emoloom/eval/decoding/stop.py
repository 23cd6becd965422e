"""The stop rule every decoder shares: EOS, or the answer's JSON object closing.

`JsonCloseScanner` applies the counting rule of `contract.find_last_object` incrementally;
`JsonStoppingCriteria` wraps it for transformers' `generate`.
"""
from __future__ import annotations

__all__ = ["JsonCloseScanner", "JsonStoppingCriteria"]


class JsonCloseScanner:
    """Has a JSON object of the output closed yet?

    The counting rule of `contract.find_last_object`: braces count outside strings, quotes only
    matter inside an object, a backslash in a string escapes the next character, and only an
    object that looks like JSON (its "{" followed by a quote, or empty) ends the answer - a
    ``{prose}`` span does not stop the row.
    """

    __slots__ = ("depth", "in_string", "escape", "closed", "pending", "looks_json")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = self.escape = self.closed = self.pending = self.looks_json = False

    def feed(self, text: str) -> bool:
        if self.closed:
            return True
        for ch in text:
            if self.pending:  # first non-space character after an outermost "{"
                if ch.isspace():
                    continue
                self.pending = False
                self.looks_json = ch in '"}'
            if ch not in '{}"\\':
                self.escape = False
                continue
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
                continue
            if ch == "{":
                self.depth += 1
                self.pending = self.depth == 1
            elif ch == "}" and self.depth:
                self.depth -= 1
                if self.depth == 0 and self.looks_json:
                    self.closed = True
                    return True
            elif ch == '"' and self.depth:
                self.in_string = True
        return False


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
