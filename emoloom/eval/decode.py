"""KV-off greedy decoding of contract answers: a reference decoder and three fast ones.

Every decoder here recomputes the whole prefix at every forward (no KV cache), as the paper's
evaluation does. All of them stop a row at the first of:

* EOS,
* the JSON object closing: brace depth back to 0 outside strings, after an opening brace
  (`JsonCloseScanner`, the counting rule of `contract.find_last_object`),
* `max_new_tokens` generated tokens.

Decoders:

``reference``   transformers ``model.generate(use_cache=False, do_sample=False)``, one prompt at a
                time, with a StoppingCriteria implementing the same JSON-close rule, so its output
                strings are comparable with the fast decoder's over the whole string.
``fast``        the same greedy tokens, faster: length-sorted continuous batching (finished rows
                leave the batch and waiting rows join), left padding with explicit position ids,
                and draft-and-verify over the contract skeleton: the next skeleton tokens are
                drafted from a table built from tokenized `render_target` renderings (and from
                the prompt for copied text), all drafts are checked in the single KV-off forward
                the step needs anyway, and the longest prefix that greedy would have produced is
                accepted plus the next greedy token. Drafts never change the output, only how many
                forwards it takes. Rows whose prompts start alike (the instruction and label list
                every prompt of a taxonomy repeats) are packed into one sequence that holds that
                shared start once; each row attends to it and to its own tokens (`packed_attention`).
                Every forward still recomputes every prefix from the token ids - nothing is kept
                between forwards - it just does not compute the same prompt start sixteen times.
                That pays where compute is the cost (CPU: 1.4x); on a GPU, where small forwards
                cost kernel launches, the extra attention calls made it slower, so by default
                rows are packed on CPU only (`pack`).
``constrained`` greedy under a logits mask from `fsm.SkeletonFSM`: labels from the taxonomy,
                VAD as two-decimal numbers in [0, 1], one-line rationale, closure within
                `max_new_tokens` guaranteed, so ParseOK is 100% by construction. Uses the same
                drafting.
``score``       labels by likelihood: one batched forward per prompt scores every label's
                continuation ``{"labels":["<label>"],"vad":{"v":`` (summed log-probabilities of
                the tokens after the candidates' common prefix; a single label), then VAD and
                rationale are decoded greedily under the constrained mask.

Prompts longer than the model window (minus `max_new_tokens`) are cut from the left of their
text part - oldest context turns first, then the start of the text - keeping the instruction and
the answer cue; the prediction carries ``truncated: true``.
"""
from __future__ import annotations

import hashlib
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

from emoloom.contract import Record, render_prompt, render_target
from emoloom.labels import VAD_ANCHORS, taxonomy as taxonomy_labels

DECODERS = ("reference", "fast", "constrained", "score")
DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_BATCH_SIZE = 16  # rows per forward; packing makes wide batches cheap on CPU too
MAX_DRAFT = 16  # longest draft per step: KV-off, a few more tokens in a forward cost little
MIN_SHARED = 16  # shortest shared prompt start worth packing rows for


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------


@dataclass
class PreparedPrompt:
    text: str  # the exact prompt string fed to the tokenizer
    ids: list[int]
    truncated: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a formatted prompt. A chat template already holds its special tokens, so
    they are only added (e.g. a BOS) for a plain prompt. Training should tokenize the same way."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    return list(tokenizer(prompt, add_special_tokens=not chat)["input_ids"])


def model_window(model, tokenizer=None) -> int:
    """Longest sequence the model takes (position embeddings), else the tokenizer's limit."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(n, int) and n > 0:
        return n
    n = getattr(tokenizer, "model_max_length", None)
    return n if isinstance(n, int) and 0 < n < 1_000_000 else 2048


def _render(tokenizer, record: Record) -> tuple[str, list[int]]:
    from emoloom.models import format_prompt

    text = format_prompt(tokenizer, render_prompt(record))
    return text, encode_prompt(tokenizer, text)


def prepare_prompt(record: Record, tokenizer, max_tokens: int) -> PreparedPrompt:
    """The prompt of `record` in at most `max_tokens` tokens (see the module doc on truncation)."""
    text, ids = _render(tokenizer, record)
    if len(ids) <= max_tokens:
        return PreparedPrompt(text, ids)
    rec = record
    while rec.context:  # oldest turns go first: they matter least for the last turn's emotion
        rec = rec.model_copy(update={"context": rec.context[1:]})
        text, ids = _render(tokenizer, rec)
        if len(ids) <= max_tokens:
            return PreparedPrompt(text, ids, truncated=True)
    _, fixed = _render(tokenizer, rec.model_copy(update={"text": ""}))
    text_ids = tokenizer(rec.text, add_special_tokens=False)["input_ids"]
    avail = min(len(text_ids), max_tokens - len(fixed))
    for _ in range(8):  # re-tokenizing at the cut can merge differently: shrink until it fits
        if avail <= 0:
            break
        kept = tokenizer.decode(text_ids[-avail:], skip_special_tokens=True).lstrip("\ufffd")
        text, ids = _render(tokenizer, rec.model_copy(update={"text": kept}))
        if len(ids) <= max_tokens:
            return PreparedPrompt(text, ids, truncated=True)
        avail -= len(ids) - max_tokens
    # Not even the instruction fits: keep the prompt's tail, where the answer cue is.
    text, ids = _render(tokenizer, rec.model_copy(update={"text": ""}))
    ids = ids[-max_tokens:] if max_tokens > 0 else []
    return PreparedPrompt(tokenizer.decode(ids), ids, truncated=True)


# ---------------------------------------------------------------------------------------------
# Token texts, the stop rule and the skeleton drafter
# ---------------------------------------------------------------------------------------------

_PER_TOKENIZER: dict[tuple, tuple[object, object]] = {}


def per_tokenizer(tokenizer, key: tuple, build: Callable[[], object]):
    """`build()` once per tokenizer object and `key` (the object itself is checked, so a new
    tokenizer that reuses a freed one's id is not served the old value)."""
    hit = _PER_TOKENIZER.get((id(tokenizer), *key))
    if hit is None or hit[0] is not tokenizer:
        hit = _PER_TOKENIZER[(id(tokenizer), *key)] = (tokenizer, build())
    return hit[1]


def token_texts(tokenizer) -> list[str]:
    """Decoded text of every token id ("" for special tokens); cached per tokenizer object."""
    return per_tokenizer(tokenizer, ("texts",), lambda: tokenizer.batch_decode(
        [[i] for i in range(len(tokenizer))], skip_special_tokens=True, clean_up_tokenization_spaces=False))


def decode_text(tokenizer, ids: Sequence[int]) -> str:
    """The raw output string of generated ids (the same call for every decoder)."""
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


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


_START = -1  # sentinel "start of the answer" in draft contexts
HISTORY_WEIGHT = 2  # an answer of this run counts twice a template rendering


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
        texts = token_texts(tokenizer)
        self.norm = lambda t: texts[t].casefold() if 0 <= t < len(texts) else ""

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

    def observe(self, answer: list[int], new: int | None = None) -> None:
        """Count the last `new` tokens of a row's answer so far (all of it by default): rows still
        in flight feed the drafts of the rows behind them, which pays most when outputs repeat."""
        start = 1 + len(answer) - (len(answer) if new is None else new)
        _count(self.history, [_START] + list(answer), self.d.order, HISTORY_WEIGHT, start)

    def _next(self, seq: list[int]) -> int | None:
        for n in range(len(seq), 0, -1):
            ctx = tuple(seq[-n:])
            hist = self.history.get(ctx)
            if hist is None:
                base = self.d.base.get(ctx)
                if base is None:
                    continue
                tok, share = base
            else:
                merged = dict(self.d._counts.get(ctx, {}))
                for t, c in hist.items():
                    merged[t] = merged.get(t, 0) + c
                tok, share = _best(merged)
            return tok if share >= self.d.min_share else None
        return None

    def draft(self, gen: list[int], k: int, prompt_index: dict | None = None, prompt: list[int] | None = None) -> list[int]:
        if k <= 0:
            return []
        seq = ([_START] + gen)[-self.d.order:]
        out: list[int] = []
        while len(out) < k:
            nxt = self._next(seq)
            if nxt is None:
                break
            out.append(nxt)
            seq = (seq + [nxt])[-self.d.order:]
        if not out and prompt_index is not None and prompt is not None and gen:
            keys = [self.norm(t) for t in gen[-2:]]
            at = prompt_index.get(tuple(keys)) if len(keys) == 2 else None
            if at is None:
                at = prompt_index.get((keys[-1],))
            if at is not None:
                out = prompt[at:at + min(k, PROMPT_DRAFT)]
        return out

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


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass
class Generation:
    tokens: list[int]
    raw: str
    stop: str  # eos | json_closed | max_new_tokens
    forwards: int  # model forwards this row took part in
    label_scores: dict[str, float] | None = None  # score decoder only


@dataclass
class _Row:
    index: int
    prompt: list[int]
    taxonomy: str
    gen: list[int] = field(default_factory=list)
    forwards: int = 0
    stop: str | None = None
    scanner: JsonCloseScanner = field(default_factory=JsonCloseScanner)
    fsm_state: tuple[int, int] | None = None
    lookup: dict | None = None
    label_scores: dict[str, float] | None = None


# ---------------------------------------------------------------------------------------------
# The decoder
# ---------------------------------------------------------------------------------------------


class Decoder:
    """Greedy KV-off decoding of prepared prompts with one of `DECODERS`."""

    def __init__(self, model, tokenizer, mode: str = "fast", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 batch_size: int = DEFAULT_BATCH_SIZE, max_draft: int = MAX_DRAFT, draft: bool = True,
                 max_labels: int = 3, max_rationale_chars: int = 80, pack: bool | None = None) -> None:
        if mode not in DECODERS:
            raise ValueError(f"unknown decoder {mode!r}; choose one of {', '.join(DECODERS)}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model, self.tokenizer, self.mode = model, tokenizer, mode
        self.max_new_tokens, self.batch_size = max_new_tokens, max(1, batch_size)
        self.max_draft = max_draft if draft else 0
        self.max_labels, self.max_rationale_chars = max_labels, max_rationale_chars
        self.texts = token_texts(tokenizer)
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos), 0)
        self.window = model_window(model, tokenizer)
        self.model_calls = 0
        self._fsms: dict[str, object] = {}
        self._split = _backbone_and_head(model)
        # Packing: None packs where it was measured to pay (a CPU model); True packs on any device,
        # False never. Either way it is used only after `_packing_ok`'s check.
        self.pack = pack if pack is not None else next(model.parameters()).device.type == "cpu"
        self._packing: bool | None = None  # settled by `_packing_ok` on first use

    # -- public ----------------------------------------------------------------------------

    def max_prompt_tokens(self) -> int:
        n = self.window - self.max_new_tokens
        if n < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} leaves no room for a prompt in the "
                             f"model's window of {self.window} tokens")
        return n

    def prepare(self, records: Sequence[Record]) -> list[PreparedPrompt]:
        limit = self.max_prompt_tokens()
        return [prepare_prompt(r, self.tokenizer, limit) for r in records]

    def generate(self, prompts: Sequence[PreparedPrompt], taxonomies: Sequence[str] | str = "goemotions",
                 progress: Callable[[int], None] | None = None) -> list[Generation]:
        """Decode every prompt; results in the order of `prompts`. `progress(n)` is called as rows
        finish. `taxonomies` (one per prompt, or one for all) matters to constrained/score/drafts."""
        import torch

        if isinstance(taxonomies, str):
            taxonomies = [taxonomies] * len(prompts)
        rows = [_Row(i, list(p.ids), t) for i, (p, t) in enumerate(zip(prompts, taxonomies))]
        with torch.inference_mode():
            if self.mode == "reference":
                self._reference(rows, progress)
            else:
                if self.mode in ("constrained", "score"):
                    for r in rows:
                        r.fsm_state = self._fsm(r.taxonomy).start_state()
                if self.mode == "score":
                    self._score(rows)
                stopped = sum(r.stop is not None for r in rows)
                if progress and stopped:
                    progress(stopped)
                self._loop([r for r in rows if r.stop is None], progress)
        return [Generation(tokens=r.gen, raw=decode_text(self.tokenizer, r.gen), stop=r.stop or "max_new_tokens",
                           forwards=r.forwards, label_scores=r.label_scores) for r in rows]

    # -- pieces ------------------------------------------------------------------------------

    def check(self, taxonomies: Sequence[str]) -> None:
        """Fail now (ValueError), not per shard, when this decoder cannot serve the taxonomies:
        constrained/score need a budget that fits the skeleton."""
        if self.mode in ("constrained", "score"):
            for tax in dict.fromkeys(taxonomies):
                self._fsm(tax)

    def _fsm(self, tax: str):
        fsm = self._fsms.get(tax)
        if fsm is None:
            from .fsm import SkeletonFSM

            vocab = getattr(self.model.config, "vocab_size", None)
            fsm = SkeletonFSM(taxonomy_labels(tax), self.texts, vocab_size=vocab, max_labels=self.max_labels,
                              max_rationale_chars=self.max_rationale_chars)
            _check_budget(fsm, tax, self.mode, self.max_new_tokens)
            self._fsms[tax] = fsm
        return fsm

    def _drafter(self, taxonomies: tuple[str, ...]) -> SkeletonDrafter:
        # shared by this tokenizer's decoders (a Predictor has one per token budget)
        return per_tokenizer(self.tokenizer, ("drafter", taxonomies),
                             lambda: SkeletonDrafter(self.tokenizer, taxonomies))

    def _push(self, row: _Row, token: int) -> None:
        row.gen.append(token)
        if token in self.eos:
            row.stop = "eos"
        elif row.scanner.feed(self.texts[token] if token < len(self.texts) else ""):
            row.stop = "json_closed"
        elif len(row.gen) >= self.max_new_tokens:
            row.stop = "max_new_tokens"

    def _forward(self, seqs: list[list[int]], need: list[int]) -> list:
        """Logits [need_i, V] of the last `need_i` positions of each sequence, in one forward:
        packed where rows share a prompt start (and packing checks out), else padded."""
        if self.pack and len(seqs) > 1:
            groups = shared_prefix_groups(seqs, need)
            if any(shared for shared, _ in groups) and self._packing_ok():
                return self._forward_packed(seqs, need, groups)
        return self._forward_padded(seqs, need)

    def _forward_padded(self, seqs: list[list[int]], need: list[int]) -> list:
        """`_forward` on a right-padded batch without an attention mask: under causal attention a
        position never sees the pads after it, so every kept position is computed as it would be
        alone (and the fused causal attention kernel is used instead of a masked one). Only the
        kept positions go through the output layer.
        """
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        rows, cols = [], []
        for i, (s, n) in enumerate(zip(seqs, need)):
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            rows += [i] * n
            cols += range(len(s) - n, len(s))
        return list(torch.split(self._logits(ids, (rows, cols)), need))

    def _logits(self, ids, at, **kwargs):
        """One KV-off forward of `ids` [B, T]; logits [n, V] at the positions `at` (an index of
        the [B, T] grid). Only those positions go through the output layer."""
        import torch

        ids = ids.to(next(self.model.parameters()).device)
        self.model_calls += 1
        if self._split is not None:
            backbone, head, softcap = self._split
            hidden = backbone(input_ids=ids, use_cache=False, **kwargs).last_hidden_state
            logits = head(hidden[at]).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            return logits
        # a model without get_decoder/get_output_embeddings: full logits, then gather
        return self.model(input_ids=ids, use_cache=False, **kwargs).logits[at].float()

    def _forward_packed(self, seqs: list[list[int]], need: list[int], groups) -> list:
        """`_forward` on one packed sequence: per group its shared start once, then one slot per
        member holding the member's remaining tokens (right-padded to the group's longest), with
        the position ids they have in the member's own sequence. `packed_attention` keeps rows
        apart and runs each group's slots as one batch."""
        import torch

        ids: list[int] = []
        position: list[int] = []
        plan, ends = [], [0] * len(seqs)
        for shared, members in groups:
            start, slot = len(ids), max(len(seqs[i]) - shared for i in members)
            ids += seqs[members[0]][:shared]
            position += range(shared)
            for i in members:
                own = seqs[i][shared:]
                ends[i] = len(ids) + len(own)
                ids += own + [self.pad_id] * (slot - len(own))
                position += range(shared, shared + slot)
            plan.append((start, shared, len(members), slot))
        dev = next(self.model.parameters()).device
        plan = PackPlan.build(plan, dev)
        cols = [c for i, n in enumerate(need) for c in range(ends[i] - n, ends[i])]
        with _packed_attention(self.model):
            logits = self._logits(torch.tensor([ids], dtype=torch.long), (0, cols),
                                  position_ids=torch.tensor([position], device=dev), **{PACK_KWARG: plan})
        if not plan.used:  # the model never called our attention: rows would have seen each other
            raise RuntimeError("packed decoding needs transformers' attention interface; use pack=False")
        return list(torch.split(logits, need))

    def _packing_ok(self) -> bool:
        """Packing is trusted once it reproduces the padded batch on a small forward (three rows
        sharing a start), checked on first use; otherwise this decoder stays padded."""
        if self._packing is None:
            self._packing = False
            if _supports_packing(self.model):
                import torch

                vocab = min(getattr(self.model.config, "vocab_size", 0) or len(self.texts), len(self.texts))
                g = torch.Generator().manual_seed(0)
                start = torch.randint(0, vocab, (MIN_SHARED + 8,), generator=g).tolist()
                seqs = [start + torch.randint(0, vocab, (n,), generator=g).tolist() for n in (37, 50, 41)]
                need, calls = [4, 9, 1], self.model_calls
                padded = torch.cat(self._forward_padded(seqs, need))
                try:
                    packed = torch.cat(self._forward_packed(seqs, need, shared_prefix_groups(seqs, need)))
                    self._packing = _same_logits(padded, packed)
                except RuntimeError:
                    pass
                self.model_calls = calls
        return self._packing

    def _loop(self, rows: list[_Row], progress) -> None:
        """Continuous batching over rows sorted by length; one KV-off forward per step."""
        if not rows:
            return
        constrained = self.mode in ("constrained", "score")
        drafter = self._drafter(tuple(sorted({r.taxonomy for r in rows}))).session() if self.max_draft else None
        queue = deque(sorted(rows, key=lambda r: (len(r.prompt) + len(r.gen), r.index)))
        active: list[_Row] = []
        while queue or active:
            while len(active) < self.batch_size and queue:
                row = queue.popleft()
                row.lookup = prompt_index(row.prompt, drafter.norm) if drafter else None
                active.append(row)
            drafts = []
            for r in active:
                k = min(self.max_draft, self.max_new_tokens - len(r.gen) - 1)
                drafts.append(drafter.draft(r.gen, k, r.lookup, r.prompt) if drafter else [])
            logits = self._forward([r.prompt + r.gen + d for r, d in zip(active, drafts)],
                                   [len(d) + 1 for d in drafts])
            for r, d, own in zip(active, drafts, logits):
                r.forwards += 1
                before = len(r.gen)
                if constrained:
                    self._accept_constrained(r, d, own)
                else:
                    self._accept_greedy(r, d, own)
                if drafter:
                    drafter.observe(r.gen, len(r.gen) - before)
            done = [r for r in active if r.stop]
            if done:
                active = [r for r in active if not r.stop]
                if progress:
                    progress(len(done))

    def _accept_greedy(self, row: _Row, draft: list[int], logits) -> None:
        greedy = logits.argmax(-1).tolist()
        for j, tok in enumerate(greedy):
            self._push(row, tok)
            if row.stop or j == len(draft) or tok != draft[j]:
                return

    def _accept_constrained(self, row: _Row, draft: list[int], logits) -> None:
        fsm = self._fsm(row.taxonomy)
        vocab = logits.shape[-1]
        for j in range(len(draft) + 1):
            allowed = fsm.mask(row.fsm_state, self.max_new_tokens - len(row.gen))[:vocab].to(logits.device)
            tok = int(logits[j].masked_fill(~allowed, float("-inf")).argmax())
            row.fsm_state = fsm.advance(row.fsm_state, tok)
            self._push(row, tok)
            if row.stop or j == len(draft) or tok != draft[j]:
                return

    def _score(self, rows: list[_Row]) -> None:
        """Pick each row's label by the likelihood of its continuation; force that prefix."""
        import torch

        cands: dict[str, tuple[list[str], list[list[int]], int]] = {}
        for r in rows:
            if r.taxonomy not in cands:
                labels = list(taxonomy_labels(r.taxonomy))
                toks = [self.tokenizer('{"labels":["' + l + '"],"vad":{"v":', add_special_tokens=False)["input_ids"]
                        for l in labels]
                common = 0
                while all(len(t) > common + 1 and t[common] == toks[0][common] for t in toks):
                    common += 1
                cands[r.taxonomy] = (labels, toks, common)
        for r in rows:
            labels, toks, common = cands[r.taxonomy]
            # Position j of a candidate's own logits predicts its token common + j.
            logits = self._forward([r.prompt + t[:-1] for t in toks], [len(t) - common for t in toks])
            scores = []
            for t, lg in zip(toks, logits):
                logp = torch.log_softmax(lg, dim=-1)
                scores.append(sum(float(logp[j, t[common + j]]) for j in range(len(t) - common)))
            best = max(range(len(labels)), key=lambda i: scores[i])  # first best on ties
            r.forwards += 1
            r.label_scores = {l: round(s, 4) for l, s in zip(labels, scores)}
            fsm = self._fsm(r.taxonomy)
            prefix = toks[best]
            r.fsm_state = fsm.state_after("".join(self.texts[t] for t in prefix))
            if len(prefix) + fsm.finish_tokens(r.fsm_state[0]) > self.max_new_tokens:
                raise ValueError(f"max_new_tokens={self.max_new_tokens} is too small for the score decoder")
            for t in prefix:
                self._push(r, t)

    def _reference(self, rows: list[_Row], progress) -> None:
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        config = GenerationConfig(do_sample=False, num_beams=1, use_cache=False, max_new_tokens=self.max_new_tokens,
                                  eos_token_id=sorted(self.eos) or None, pad_token_id=self.pad_id)
        dev = next(self.model.parameters()).device
        for r in rows:
            ids = torch.tensor([r.prompt], dtype=torch.long, device=dev)
            stop = JsonStoppingCriteria(self.texts, ids.shape[1])
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config,
                                      stopping_criteria=StoppingCriteriaList([stop]))
            for tok in out[0, ids.shape[1]:].tolist():
                self._push(r, tok)
                r.forwards += 1
                if r.stop:
                    break
            self.model_calls += r.forwards
            if progress:
                progress(1)


def _check_budget(fsm, tax: str, mode: str, max_new_tokens: int) -> None:
    need = fsm.finish_tokens(fsm.start)
    if need > max_new_tokens:
        raise ValueError(f"decoder {mode!r} needs max_new_tokens >= {int(need)} to guarantee a closed "
                         f"answer for taxonomy {tax!r}; got {max_new_tokens}")


def check_budget(tokenizer, taxonomies: Sequence[str], mode: str, max_new_tokens: int) -> None:
    """The constrained/score budget check with a tokenizer only (no model): lets a driver fail
    fast before it starts actors."""
    if mode not in ("constrained", "score"):
        return
    from .fsm import SkeletonFSM

    for tax in dict.fromkeys(taxonomies):
        _check_budget(SkeletonFSM(taxonomy_labels(tax), token_texts(tokenizer)), tax, mode, max_new_tokens)


def _backbone_and_head(model):
    """(backbone, output layer, logit softcap) of a causal LM, or None when it does not split so."""
    try:
        backbone, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if backbone is None or head is None or backbone is model:
        return None
    return backbone, head, getattr(model.config, "final_logit_softcapping", None)


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


def hf_generate_cached(model, tokenizer, prompts: Sequence[PreparedPrompt], max_new_tokens: int,
                       batch_size: int = 16) -> list[Generation]:
    """transformers generate(use_cache=True), batched (left padding), same stop rule: the
    KV-cache baseline of the speed bench. Not guaranteed to match the KV-off outputs."""
    import torch
    from transformers import GenerationConfig, StoppingCriteriaList

    dec = Decoder(model, tokenizer, "reference", max_new_tokens=max_new_tokens)
    config = GenerationConfig(do_sample=False, num_beams=1, use_cache=True, max_new_tokens=max_new_tokens,
                              eos_token_id=sorted(dec.eos) or None, pad_token_id=dec.pad_id)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].ids))
    out: dict[int, Generation] = {}
    dev = next(model.parameters()).device
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            width = max(len(prompts[i].ids) for i in idx)
            ids = torch.full((len(idx), width), dec.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for b, i in enumerate(idx):
                p = prompts[i].ids
                ids[b, width - len(p):] = torch.tensor(p)
                mask[b, width - len(p):] = 1
            seqs = model.generate(ids.to(dev), attention_mask=mask.to(dev), generation_config=config,
                                  stopping_criteria=StoppingCriteriaList([JsonStoppingCriteria(dec.texts, width)]))
            for b, i in enumerate(idx):
                row = _Row(i, prompts[i].ids, "goemotions")
                for tok in seqs[b, width:].tolist():
                    dec._push(row, tok)
                    row.forwards += 1
                    if row.stop:
                        break
                out[i] = Generation(row.gen, decode_text(tokenizer, row.gen), row.stop or "max_new_tokens", row.forwards)
    return [out[i] for i in range(len(prompts))]


# ---------------------------------------------------------------------------------------------
# Packing rows that share a prompt start
# ---------------------------------------------------------------------------------------------

PACK_KWARG = "emoloom_pack"
PACK_ATTENTION = "emoloom_packed_sdpa"


def shared_prefix_groups(seqs: Sequence[Sequence[int]], need: Sequence[int],
                         min_shared: int = MIN_SHARED) -> list[tuple[int, list[int]]]:
    """Rows grouped by their first `min_shared` tokens, with the length of the start all members
    of a group share (0 for a row alone). The shared start stops before each member's last
    `need` positions (whose logits are wanted), so those stay in the row's own part."""
    by_key: dict[tuple, list[int]] = {}
    for i, s in enumerate(seqs):
        key = tuple(s[:min_shared]) if len(s) - need[i] >= min_shared else ("alone", i)
        by_key.setdefault(key, []).append(i)
    groups = []
    for members in by_key.values():
        first = seqs[members[0]]
        shared = min(len(seqs[i]) - need[i] for i in members)
        for i in members[1:]:
            n, other = min_shared, seqs[i]
            while n < shared and other[n] == first[n]:
                n += 1
            shared = n
        if len(members) == 1 or shared < min_shared:
            groups += [(0, [i]) for i in members]
        else:
            groups.append((shared, members))
    return groups


@dataclass
class PackPlan:
    """The layout of a packed sequence, for `packed_attention`: per group (start, shared, rows,
    slot, mask) - the shared start at [start, start + shared), then `rows` slots of `slot`
    tokens, and the mask that lets a slot's tokens see the shared start and, causally, their
    own slot (None when nothing is shared). Built once per forward, used by every layer; `used`
    records that the model's attention went through `packed_attention` at all."""

    groups: list
    used: bool = False

    @classmethod
    def build(cls, layout, device) -> "PackPlan":
        import torch

        groups = []
        for start, shared, rows, slot in layout:
            mask = None
            if shared:
                mask = torch.ones(slot, shared + slot, dtype=torch.bool).tril(shared).to(device)[None, None]
            groups.append((start, shared, rows, slot, mask))
        return cls(groups)


def packed_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention over a packed sequence (batch 1): with ``emoloom_pack=plan``
    each group's shared start attends causally to itself, and each slot's tokens attend to that
    start plus their own slot's earlier tokens - the keys each row would see alone, in order."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan = kwargs.pop(PACK_KWARG, None)
    if plan is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    plan.used = True
    heads, kv_heads, dim = query.shape[1], key.shape[1], query.shape[3]
    out = query.new_empty(1, query.shape[2], heads, dim)  # [1, T, H, D], as sdpa_attention_forward returns
    for start, shared, rows, slot, mask in plan.groups:
        mid, end = start + shared, start + shared + rows * slot

        def slots(x, n_heads):  # [1, h, T, D] -> [rows, h, slot, D] over this group's slots
            return x[0, :, mid:end].reshape(n_heads, rows, slot, dim).transpose(0, 1)

        q, k, v = slots(query, heads), slots(key, kv_heads), slots(value, kv_heads)
        if shared:
            out[:, start:mid] = sdpa_attention_forward(module, query[:, :, start:mid], key[:, :, start:mid],
                                                       value[:, :, start:mid], None, **kwargs)[0]
            k = torch.cat([key[:, :, start:mid].expand(rows, -1, -1, -1), k], dim=2)
            v = torch.cat([value[:, :, start:mid].expand(rows, -1, -1, -1), v], dim=2)
        out[0, mid:end] = sdpa_attention_forward(module, q, k, v, mask, **kwargs)[0].reshape(rows * slot, heads, dim)
    return out, None


def _same_logits(a, b) -> bool:
    """Packed logits agree with the padded batch's: the same greedy token everywhere and no
    more than float rounding apart (SDPA kernels pick their blocking by query/key length, so
    the last bits can differ; a row seeing another row's tokens moves logits by whole units)."""
    import torch

    scale = float(a.abs().max()) or 1.0
    return bool(torch.equal(a.argmax(-1), b.argmax(-1))) and float((a - b).abs().max()) <= 1e-4 * scale


def _supports_packing(model) -> bool:
    """Packing rides on transformers' SDPA attention, without sliding windows (their masks are
    built by transformers, which packing bypasses)."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(config, "use_sliding_window", False) or "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return False
    from transformers import AttentionInterface

    AttentionInterface.register(PACK_ATTENTION, packed_attention)
    return True


@contextmanager
def _packed_attention(model):
    """Route the model's attention through `packed_attention` for one forward. No mask function
    is registered under that name, so transformers builds no mask of its own."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = PACK_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before
