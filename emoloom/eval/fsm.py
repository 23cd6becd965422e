"""A small state machine over the contract's answer skeleton, for logits masking.

The language is exactly what `contract.render_target` writes::

    {"labels":["L1"(,"L2")*],"vad":{"v":N,"a":N,"d":N},"rationale":"R"}

with L* distinct labels of one taxonomy (at most `max_labels`), N a two-decimal number in [0, 1]
(`0.DD` or `1.00`) and R a one-line JSON string without escapes (at most `max_rationale_chars`).

The machine runs over characters; tokens are checked by feeding their decoded text through it,
and the per-state token tables are cached (a state is visited by many rows). Closure within the
token budget is guaranteed: every token whose next state could no longer be completed in the
remaining budget is masked out. The bound used is the fewest tokens that spell the state's
shortest completion (shortest in characters, ties broken lexicographically, so the shortest
completion of a state reached along it is the rest of it: the bound drops by one per step along
that path, and some token is always allowed).

Assumes a tokenizer whose per-token texts concatenate to the decoded output (byte-level BPE, as
the built-in models and Qwen/Llama-3 use). Unstructured generation never goes through here.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

LITERALS = ('{"labels":["', ',"vad":{"v":', ',"a":', ',"d":', '},"rationale":"', "}")
# Two-decimal numbers in [0, 1]: every prefix of "0.DD" and "1.00".
NUM_PREFIXES = frozenset(
    ["0", "0.", "1", "1.", "1.0", "1.00"] + [f"0.{d}" for d in range(10)] + [f"0.{d:02d}" for d in range(100)]
)
DONE = ("done",)
RAT = ("rat",)  # inside the rationale string; its length is tracked outside the key
_AFTER_LITERAL = {0: ("label", (), ""), 1: ("num", 0, ""), 2: ("num", 1, ""), 3: ("num", 2, ""), 4: RAT, 5: DONE}


class SkeletonFSM:
    """Token-level masks for one taxonomy and one tokenizer vocabulary.

    `token_texts[i]` is the decoded text of token i ("" for special tokens, never allowed).
    """

    def __init__(self, labels: Sequence[str], token_texts: Sequence[str], vocab_size: int | None = None,
                 max_labels: int = 3, max_rationale_chars: int = 80) -> None:
        import torch

        self.labels = tuple(labels)
        self.label_set = frozenset(self.labels)
        self.max_labels = max_labels
        self.max_rationale_chars = max_rationale_chars
        self.texts = list(token_texts)
        self.vocab_size = max(vocab_size or 0, len(self.texts))
        self._prefixes: dict[str, tuple[str, ...]] = {}
        for label in self.labels:
            for i in range(len(label) + 1):
                self._prefixes.setdefault(label[:i], ())
                self._prefixes[label[:i]] += (label,)
        # For the minimum-token bound: which strings are a single token, and the longest one.
        self._spellable = {t for t in self.texts if t}
        self._max_tok_len = min(32, max((len(t) for t in self._spellable), default=1))
        # Tokens grouped by first character, so a state only simulates tokens that can start it.
        self._by_first: dict[str, list[int]] = {}
        for i, t in enumerate(self.texts):
            if t:
                self._by_first.setdefault(t[0], []).append(i)
        self._keys: list[tuple] = []
        self._key_index: dict[tuple, int] = {}
        self._tables: dict[int, tuple] = {}
        self._torch = torch
        self.start = self.key_id(("lit", 0, 0))
        if self.finish_tokens(self.start) == float("inf"):
            raise ValueError("the tokenizer cannot spell the contract skeleton with its tokens")

    # -- keys --------------------------------------------------------------------------------

    def key_id(self, key: tuple) -> int:
        idx = self._key_index.get(key)
        if idx is None:
            idx = self._key_index[key] = len(self._keys)
            self._keys.append(key)
        return idx

    def key(self, idx: int) -> tuple:
        return self._keys[idx]

    # -- characters --------------------------------------------------------------------------

    @staticmethod
    def _settle(key: tuple) -> tuple:
        if key[0] == "lit" and key[2] == len(LITERALS[key[1]]):
            return _AFTER_LITERAL[key[1]]
        return key

    def char(self, key: tuple, c: str) -> tuple | None:
        """The state after one character, or None when the character breaks the skeleton."""
        kind = key[0]
        if kind == "lit":
            _, j, i = key
            return self._settle(("lit", j, i + 1)) if LITERALS[j][i] == c else None
        if kind == "label":
            _, chosen, prefix = key
            if c == '"':
                if prefix in self.label_set and prefix not in chosen:
                    return ("after", tuple(sorted(chosen + (prefix,))))
                return None
            grown = prefix + c
            if any(l not in chosen for l in self._prefixes.get(grown, ())):
                return ("label", chosen, grown)
            return None
        if kind == "after":
            chosen = key[1]
            if c == "]":
                return ("lit", 1, 0)
            if c == "," and len(chosen) < self.max_labels and len(chosen) < len(self.labels):
                return ("comma", chosen)
            return None
        if kind == "comma":
            return ("label", key[1], "") if c == '"' else None
        if kind == "num":
            _, dim, s = key
            grown = s + c
            if grown not in NUM_PREFIXES:
                return None
            return ("lit", 2 + dim, 0) if len(grown) == 4 else ("num", dim, grown)
        if kind == "rat":
            if c == '"':
                return ("lit", 5, 0)
            # A JSON string may not hold raw control characters; escapes are left out altogether.
            if c == "\\" or ord(c) < 32 or c == "\x7f":
                return None
            return RAT
        return None  # done: nothing may follow

    def feed(self, key: tuple, text: str) -> tuple[tuple, int] | None:
        """(state after `text`, rationale characters it added), or None when not allowed."""
        added = 0
        for c in text:
            in_rat = key == RAT
            key = self.char(key, c)
            if key is None:
                return None
            added += in_rat and key == RAT
        return key, added

    # -- shortest completion and the token bound ----------------------------------------------

    @lru_cache(maxsize=None)
    def shortest(self, key: tuple) -> str:
        """Shortest completion (fewest characters, then lexicographically first)."""
        kind = key[0]
        if kind == "done":
            return ""
        if kind == "rat":
            return '"}'
        if kind == "after":
            return "]" + self.shortest(("lit", 1, 0))  # closing the list is always shortest
        if kind == "lit":
            _, j, i = key
            return LITERALS[j][i:] + self.shortest(_AFTER_LITERAL[j])
        if kind == "num":
            _, dim, s = key
            rest = "1.00"[len(s):] if s.startswith("1") else "0.00"[len(s):]
            return rest + self.shortest(("lit", 2 + dim, 0))
        if kind == "comma":
            return '"' + self.shortest(("label", key[1], ""))
        if kind == "label":
            _, chosen, prefix = key
            options = [l[len(prefix):] + '"' + self.shortest(("after", tuple(sorted(chosen + (l,)))))
                       for l in self._prefixes.get(prefix, ()) if l not in chosen]
            return min(options, key=lambda s: (len(s), s))
        raise ValueError(f"unknown state {key!r}")

    def _min_tokens(self, text: str) -> float:
        best = [0.0] + [float("inf")] * len(text)
        for i in range(len(text)):
            if best[i] == float("inf"):
                continue
            for j in range(i + 1, min(len(text), i + self._max_tok_len) + 1):
                if text[i:j] in self._spellable and best[i] + 1 < best[j]:
                    best[j] = best[i] + 1
        return best[-1]

    def finish_tokens(self, idx: int) -> float:
        """Fewest tokens that complete state `idx` (an upper bound on what is needed)."""
        return self._finish(self._keys[idx])

    @lru_cache(maxsize=None)
    def _finish(self, key: tuple) -> float:
        return self._min_tokens(self.shortest(key))

    # -- token tables --------------------------------------------------------------------------

    def table(self, idx: int):
        """The allowed tokens of state `idx`, sparse (most states allow a handful of tokens):
        (ids, next key ids, rationale characters added, finish bound after), as tensors sorted
        by token id, plus {token id: row} for `advance`."""
        cached = self._tables.get(idx)
        if cached is not None:
            return cached
        torch = self._torch
        key = self._keys[idx]
        found: list[tuple[int, int, int, float]] = []
        for first, ids in self._by_first.items():
            if self.char(key, first) is None:
                continue
            for t in ids:
                res = self.feed(key, self.texts[t])
                if res is not None:
                    k2, dn = res
                    found.append((t, self.key_id(k2), dn, self._finish(k2)))
        found.sort()
        cached = self._tables[idx] = (
            torch.tensor([f[0] for f in found], dtype=torch.long),
            torch.tensor([f[1] for f in found], dtype=torch.long),
            torch.tensor([f[2] for f in found], dtype=torch.long),
            torch.tensor([f[3] for f in found], dtype=torch.float64),
            {f[0]: i for i, f in enumerate(found)},
        )
        return cached

    def mask(self, state: tuple[int, int], remaining: int):
        """Boolean mask [vocab] of the tokens allowed from `state` = (key id, rationale length)
        with `remaining` tokens left (the token chosen now included)."""
        idx, n_rat = state
        ids, _, added, finish, _ = self.table(idx)
        base = n_rat if self._keys[idx] == RAT else 0
        ok = (finish <= remaining - 1) & (added + base <= self.max_rationale_chars)
        out = self._torch.zeros(self.vocab_size, dtype=self._torch.bool)
        out[ids[ok]] = True
        return out

    def advance(self, state: tuple[int, int], token: int) -> tuple[int, int]:
        idx, n_rat = state
        _, nxt, added, _, row = self.table(idx)
        i = row.get(token)
        if i is None:
            raise ValueError(f"token {token} is not allowed in state {self._keys[idx]!r}")
        base = n_rat if self._keys[idx] == RAT else 0
        j = int(nxt[i])
        return j, (base + int(added[i])) if self._keys[j] == RAT else 0

    def state_after(self, text: str) -> tuple[int, int]:
        """The (key id, rationale length) after a forced prefix text, from the start."""
        res = self.feed(self._keys[self.start], text)
        if res is None:
            raise ValueError(f"{text!r} is not a prefix of the contract skeleton")
        key, dn = res
        return self.key_id(key), dn if key == RAT else 0

    def start_state(self) -> tuple[int, int]:
        return self.start, 0

    def is_done(self, state: tuple[int, int]) -> bool:
        return self._keys[state[0]] == DONE
