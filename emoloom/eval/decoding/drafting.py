"""Drafts for draft-and-verify: tokens the next forward checks for free.

KV-off, every forward recomputes the whole prefix anyway, so drafted tokens ride along in the
forward a step needs; the longest drafted prefix that greedy would have produced is accepted,
plus the next greedy token. Drafts decide how many forwards a row takes, never its tokens.

`SkeletonDrafter` holds the contract's skeleton (and this run's answers) as an n-gram table;
where it drafts nothing, tokens that followed the last answer tokens in the prompt are drafted.
"""
from __future__ import annotations

from typing import Sequence

from emoloom.contract import render_target
from emoloom.labels import VAD_ANCHORS, taxonomy as taxonomy_labels

from .tokens import token_texts

__all__ = ["SkeletonDrafter", "DraftSession", "prompt_index", "PROMPT_DRAFT"]

_START = -1  # sentinel "start of the answer" in draft contexts
HISTORY_WEIGHT = 2  # an answer of this run counts twice a template rendering
BRANCH_SHARE = 0.95  # a drafted token with less of its context's counts gets side branches
BRANCH_WIDTH = 4  # side branches at one depth
# A drafted or branch token is a position whose logits are read: the last layer and the output
# layer run there (`forward.last_layer_at`), a few percent of a row's forward on the tiny models.
# So a draft stops, and a branch is left out, where greedy is unlikely to get that far: the share
# product along the draft (times the branch token's share) under these. Measured on
# bench/eval_speed.py (tiny-qwen2 SFT, 200 prompts): 7-19% less CPU than drafting on to
# `min_share` with every branch; 0.1-0.4 / 0.05-0.15 all within a few percent of each other.
MIN_PATH = 0.2
MIN_BRANCH_PATH = 0.1


class SkeletonDrafter:
    """Drafts the next tokens where the contract's skeleton (or this run's answers) fix them.

    Built from tokenized `render_target` renderings: every label of the taxonomies (single and
    multi-label), varied rationales, every two-decimal value of each VAD dimension (so digits never
    hide what follows them), each label's VAD anchor (`labels.VAD_ANCHORS`) and the trainer's
    fixed rationale for texts without lexicon cues. A context (the last 1..`order` answer tokens,
    the start marked) maps to counts of its next token; a draft follows the longest known context
    while its most frequent next token has at least `min_share` of the counts (a wrong draft costs
    a few positions of a forward that runs anyway, so guessing past certainty pays). That covers ``{"`` ->
    ``labels":["``, the rest of a label once its first tokens pin it down, ``"],"`` ->
    ``vad":{"v":0.`` and so on, and stops at free content (digits, rationale).

    A `session()` adds what one decoding run learns: every accepted token of every row, finished or
    still in flight, feeds the counts (outputs of a trained model repeat), and where the counts draft nothing, the tokens that followed the last
    answer tokens in the prompt are drafted (rationales quote the text). Drafts only decide how
    many tokens a forward may accept, never which tokens come out.
    """

    def __init__(self, tokenizer, taxonomies: Sequence[str], order: int = 8, min_share: float = 0.25,
                 seed: int = 0) -> None:
        import random

        self.order, self.min_share = order, min_share
        counts: dict[tuple[int, ...], dict[int, int]] = {}
        rng = random.Random(seed)
        words = ["cues", "happy", "sad", "the", "not", "about", "angry", "so", "thanks", "wow",
                 "i", "am", "feel", "great", "lost", "my", "job", "love", "it"]

        def add(labels, vad, rationale):
            ids = tokenizer(render_target(labels, vad, rationale), add_special_tokens=False)["input_ids"]
            _count(counts, [_START] + list(ids), order, 1)

        for tax in dict.fromkeys(taxonomies):
            labels = taxonomy_labels(tax)
            for i, label in enumerate(labels):
                for variant in range(3):
                    chosen = [label]
                    if variant == 2:  # multi-label answers are the minority
                        chosen = [label, labels[(i + 1) % len(labels)]]
                    vad = tuple(rng.randint(0, 100) / 100 for _ in range(3))
                    add(chosen, vad, "cues: " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 5))))
            for x in range(101):
                add([labels[x % len(labels)]], (x / 100,) * 3, "cues: " + rng.choice(words))
            for label in labels:  # a label's VAD anchor: where trained answers tend to land
                for _ in range(2):
                    add([label], VAD_ANCHORS[label], "cues: " + rng.choice(words))
                for rationale in _fixed_rationales(label):
                    add([label], VAD_ANCHORS[label], rationale)
        # Most frequent next token per context, and its share.
        self.base = {ctx: _best(c) for ctx, c in counts.items()}
        self._counts = counts
        folded = [t.casefold() for t in token_texts(tokenizer)]
        self.norm = lambda t: folded[t] if 0 <= t < len(folded) else ""

    def session(self) -> "DraftSession":
        return DraftSession(self)


def _fixed_rationales(label: str) -> list[str]:
    """The trainer's rationale for a text without lexicon cues (`lexicon.rationale_for`), the one
    rationale that is pure template. Optional: drafting works without it."""
    try:
        from emoloom.lexicon import load_lexicon, rationale_for

        return [rationale_for("", [label], load_lexicon(None))]
    except Exception:  # noqa: BLE001 - a missing or changed lexicon only costs draft quality
        return []


def _count(table: dict, seq: list[int], order: int, weight: int, start: int = 1) -> None:
    """Count each position from `start` on as the next token of its 1..`order` preceding ones."""
    for pos in range(max(1, start), len(seq)):
        for n in range(1, min(order, pos) + 1):
            nxt = table.setdefault(tuple(seq[pos - n:pos]), {})
            nxt[seq[pos]] = nxt.get(seq[pos], 0) + weight


def _best(counts: dict[int, int]) -> tuple[int, float]:
    tok = max(counts, key=lambda t: (counts[t], -t))  # ties: the lower id, for determinism
    return tok, counts[tok] / sum(counts.values())


class DraftSession:
    """The drafter plus what one `Decoder.generate` call has seen (reset per call, so a shard's
    outputs and forward counts never depend on which shards ran before it)."""

    def __init__(self, drafter: SkeletonDrafter) -> None:
        self.d = drafter
        self.history: dict[tuple[int, ...], dict[int, int]] = {}
        self.best: dict[tuple[int, ...], tuple[int, float]] = {}  # merged counts' best, until they change

    def observe(self, answer: list[int], new: int | None = None) -> None:
        """Count the last `new` tokens of a row's answer so far (all of it by default): rows still
        in flight feed the drafts of the rows behind them, which pays most when outputs repeat."""
        seq = [_START] + list(answer)
        start = 1 + len(answer) - (len(answer) if new is None else new)
        for pos in range(max(1, start), len(seq)):
            tok = seq[pos]
            for n in range(1, min(self.d.order, pos) + 1):
                ctx = tuple(seq[pos - n:pos])
                nxt = self.history.setdefault(ctx, {})
                nxt[tok] = nxt.get(tok, 0) + HISTORY_WEIGHT
                self.best.pop(ctx, None)

    def _merged(self, ctx: tuple[int, ...]) -> dict[int, int] | None:
        """Next-token counts of a context: the skeleton's plus this run's."""
        hist = self.history.get(ctx)
        if hist is None:
            return self.d._counts.get(ctx)
        merged = dict(self.d._counts.get(ctx, {}))
        for t, c in hist.items():
            merged[t] = merged.get(t, 0) + c
        return merged

    def _step(self, seq: list[int]) -> tuple[tuple[int, ...] | None, int | None, float]:
        """(context, its most frequent next token, that token's share) for the longest known
        context of `seq`; (None, None, 0.0) when none is known."""
        for n in range(len(seq), 0, -1):
            ctx = tuple(seq[-n:])
            best = self.best.get(ctx)
            if best is None:
                if ctx in self.history:
                    best = self.best[ctx] = _best(self._merged(ctx))
                else:
                    best = self.d.base.get(ctx)
                    if best is None:
                        continue
            return ctx, best[0], best[1]
        return None, None, 0.0

    def _next(self, seq: list[int]) -> int | None:
        _, tok, share = self._step(seq)
        return tok if tok is not None and share >= self.d.min_share else None

    def draft(self, gen: list[int], k: int, prompt_index: dict | None = None, prompt: list[int] | None = None) -> list[int]:
        return self.draft_tree(gen, k, 0, prompt_index, prompt)[0]

    def draft_tree(self, gen: list[int], k: int, width: int = 0, prompt_index: dict | None = None,
                   prompt: list[int] | None = None) -> tuple[list[int], list[tuple[int, int]]]:
        """(draft, branches): up to `k` drafted tokens, and at most `width` side branches
        (depth, token) - a token other than the draft's at that depth. Branches go where the
        counts are split: beside a drafted token whose share is under `BRANCH_SHARE`, and at
        the free position where the draft stops (a VAD digit, a label's first token, a rationale
        word). Greedy fills that position in the same forward anyway; the branch it picks
        gives the token after it too. Drafts and branches greedy is unlikely to reach are left
        out (`MIN_PATH`, `MIN_BRANCH_PATH`)."""
        if k <= 0:
            return [], []
        seq = ([_START] + gen)[-self.d.order:]
        out: list[int] = []
        branches: list[tuple[int, int]] = []
        path = 1.0  # the draft's share product so far: how likely greedy gets this deep
        while len(out) < k:
            ctx, tok, share = self._step(seq)
            if tok is None:
                break
            if share < BRANCH_SHARE and len(branches) < width:
                counts = self._merged(ctx) or {}
                total = sum(counts.values())
                ranked = sorted(counts, key=lambda t: (-counts[t], t))
                if share >= self.d.min_share:
                    ranked = [t for t in ranked if t != tok]  # beside the drafted token
                ranked = [t for t in ranked if path * counts[t] / total >= MIN_BRANCH_PATH]
                branches += [(len(out), t) for t in ranked[:min(BRANCH_WIDTH, width - len(branches))]]
            if share < self.d.min_share or path * share < MIN_PATH:
                break
            out.append(tok)
            path *= share
            seq = (seq + [tok])[-self.d.order:]
        if not out and prompt_index is not None and prompt is not None and gen:
            keys = [self.norm(t) for t in gen[-2:]]
            at = prompt_index.get(tuple(keys)) if len(keys) == 2 else None
            if at is None:
                at = prompt_index.get((keys[-1],))
            if at is not None:
                out = prompt[at:at + min(k, PROMPT_DRAFT)]
                branches = [(0, t) for _, t in branches if t != out[0]] if out else branches
        return out, branches

    def norm(self, token: int) -> str:
        return self.d.norm(token)


PROMPT_DRAFT = 6  # tokens drafted from the prompt: a quote, but rarely a long one


def prompt_index(ids: list[int], norm) -> dict[tuple[str, ...], int]:
    """Normalized (a, b) and (a,) -> position after their last occurrence in `ids`. The text sits
    late in the prompt, so its last occurrence is the likeliest source of a quote; tokens are
    compared case-folded because answers often quote the text in lower case."""
    keys = [norm(t) for t in ids]
    index: dict[tuple[str, ...], int] = {}
    for i in range(len(ids) - 1):
        index[(keys[i],)] = i + 1
        if i + 2 < len(ids):
            index[(keys[i], keys[i + 1])] = i + 2
    return index


