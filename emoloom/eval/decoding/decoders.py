"""The decoders: greedy KV-off decoding of prepared prompts.

Every decoder recomputes the whole prefix at every forward (no KV cache), as the paper's
evaluation does, and stops a row at the first of EOS, the JSON object closing (`stop`), or
`max_new_tokens` generated tokens.

``reference``   transformers ``model.generate(use_cache=False, do_sample=False)``, one prompt at a
                time, pure greedy (`greedy.pure_greedy`: the checkpoint's own generation settings
                are not inherited), with a StoppingCriteria for the same JSON-close rule.
``fast``        the same greedy tokens, faster: length-sorted continuous batching (finished rows
                leave the batch and waiting rows join), draft-and-verify (`drafting`: the contract
                skeleton, this run's answers, quotes of the prompt), and on CPU rows sharing a
                prompt start packed into one sequence (`packing`), its last layer run only at
                the positions whose logits are read (`forward.last_layer_at`). A step whose
                top-2 logit gap is within packing's tolerance is recomputed padded, so packing
                cannot flip a greedy choice.
``constrained`` greedy under a logits mask from `fsm.SkeletonFSM`: labels from the taxonomy,
                VAD as two-decimal numbers in [0, 1], one-line rationale, closure within
                `max_new_tokens` guaranteed, so ParseOK is 100% by construction. Same drafting.
``score``       labels by likelihood: one batched forward per prompt scores every label's
                continuation ``{"labels":["<label>"],"vad":{"v":`` (summed log-probabilities of
                the tokens after the candidates' common prefix; a single label), then VAD and
                rationale are decoded greedily under the constrained mask.

Every greedy choice's top-2 logit gap is checked against the model dtype's resolution
(`greedy.near_tie_limit`); `Generation.near_ties` counts the choices within it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Callable, Sequence

from pydantic import AfterValidator

from emoloom.config import did_you_mean
from emoloom.contract import JsonCloseScanner, Record
from emoloom.labels import taxonomy as taxonomy_labels

from .drafting import SkeletonDrafter, prompt_index
from .forward import Forward
from .greedy import greedy_choices, ignored_settings, near_tie_limit, pure_greedy
from .packing import PACK_TOLERANCE
from .prompts import PreparedPrompt, model_window, prepare_prompt
from .stop import JsonStoppingCriteria
from .tokens import decode_text, per_tokenizer, token_texts

__all__ = ["DECODERS", "DecoderName", "check_decoder", "DEFAULT_MAX_NEW_TOKENS", "DEFAULT_BATCH_SIZE", "MAX_DRAFT",
           "MAX_BRANCHES", "Generation", "Decoder", "check_budget"]

DECODERS = ("reference", "fast", "constrained", "score")


def check_decoder(name: str) -> str:
    """`name` if it is one of `DECODERS`; else a ValueError that names the closest."""
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}{did_you_mean(name, DECODERS)}")
    return name


# The one config type for a decoder name (eval and screen configs alike).
DecoderName = Annotated[str, AfterValidator(check_decoder)]
DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_BATCH_SIZE = 16  # rows per forward; packing makes wide batches cheap on CPU too
MAX_DRAFT = 16  # longest skeleton draft per step: KV-off, a few more tokens in a forward cost little
# Side branches per row and forward (packed forwards only): a token each, about 1% of a row's
# forward; about one in two picks up a token (bench/eval_speed.py --lever-rows: with and without).
MAX_BRANCHES = 16


@dataclass
class Generation:
    tokens: list[int]
    raw: str
    stop: str  # eos | json_closed | max_new_tokens
    forwards: int  # model forwards this row took part in
    label_scores: dict[str, float] | None = None  # score decoder only
    near_ties: int = 0  # greedy choices whose top-2 gap was within the dtype's resolution


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
    near_ties: int = 0


@dataclass
class _Plan:
    """What one forward's logits say for one row, before anything is committed."""

    tokens: list[int]
    gaps: list[float]  # top-2 logit gap of each choice
    tops: list[float]  # |top-1 logit| of each choice
    states: list | None = None  # constrained: the FSM state after each token
    branch: bool = False  # the last token came from a side branch


class Decoder:
    """Greedy KV-off decoding of prepared prompts with one of `DECODERS`."""

    def __init__(self, model, tokenizer, mode: str = "fast", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 batch_size: int = DEFAULT_BATCH_SIZE, max_draft: int = MAX_DRAFT, draft: bool = True,
                 max_labels: int = 3, max_rationale_chars: int = 80, pack: bool | None = None,
                 branches: int = MAX_BRANCHES, prune: bool = True) -> None:
        check_decoder(mode)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model, self.tokenizer, self.mode = model, tokenizer, mode
        self.max_new_tokens, self.batch_size = max_new_tokens, max(1, batch_size)
        self.max_draft = max_draft if draft else 0
        # Branches ride on packed forwards of the plain greedy decoder only.
        self.max_branches = branches if draft and mode == "fast" else 0
        self.max_labels, self.max_rationale_chars = max_labels, max_rationale_chars
        self.texts = token_texts(tokenizer)
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos), 0)
        self.window = model_window(model, tokenizer)
        # The checkpoint's generation settings that pure greedy decoding leaves out.
        self.ignored_settings = ignored_settings(model)
        vocab = min(getattr(model.config, "vocab_size", 0) or len(self.texts), len(self.texts))
        self.fwd = Forward(model, self.pad_id, vocab, pack, prune)
        self.tie_eps = near_tie_limit(self.fwd.dtype)
        self.pack_fallbacks = 0  # packed steps recomputed padded because of a close call
        self.branch_tokens = 0  # tokens taken from side branches
        self._fsms: dict[str, object] = {}

    # -- what tests and benches read ------------------------------------------------------

    @property
    def model_calls(self) -> int:
        return self.fwd.calls

    @property
    def pack(self) -> bool:
        return self.fwd.pack

    @property
    def _packing(self) -> bool | None:
        return self.fwd.packing

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
                           forwards=r.forwards, label_scores=r.label_scores, near_ties=r.near_ties) for r in rows]

    def check(self, taxonomies: Sequence[str]) -> None:
        """Fail now (ValueError), not per shard, when this decoder cannot serve the taxonomies:
        constrained/score need a budget that fits the skeleton."""
        if self.mode in ("constrained", "score"):
            for tax in dict.fromkeys(taxonomies):
                self._fsm(tax)

    # -- pieces ------------------------------------------------------------------------------

    def _fsm(self, tax: str):
        fsm = self._fsms.get(tax)
        if fsm is None:
            from ..fsm import SkeletonFSM

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

    def _near_tie(self, gap: float, top: float) -> bool:
        return gap <= self.tie_eps * max(1.0, top)

    def _loop(self, rows: list[_Row], progress) -> None:
        """Continuous batching over rows sorted by length; one KV-off forward per step."""
        if not rows:
            return
        drafter = self._drafter(tuple(sorted({r.taxonomy for r in rows}))).session() if self.max_draft else None
        queue = deque(sorted(rows, key=lambda r: (len(r.prompt) + len(r.gen), r.index)))
        active: list[_Row] = []
        while queue or active:
            while len(active) < self.batch_size and queue:
                row = queue.popleft()
                if drafter:
                    row.lookup = prompt_index(row.prompt, drafter.norm)
                active.append(row)
            drafts, alts = zip(*(self._draft(r, drafter) for r in active))
            seqs = [r.prompt + r.gen + d for r, d in zip(active, drafts)]
            need = [len(d) + 1 for d in drafts]
            logits, packed = self.fwd(seqs, need, alts)
            plans = self._plans(active, drafts, logits, alts if packed else None)
            if packed:
                # Packed logits are only trusted to PACK_TOLERANCE x max|logit|: either of two
                # logits may move that much, so a gap under twice that is recomputed padded.
                low, high = logits.aminmax()
                limit = 2 * PACK_TOLERANCE * max(float(high), -float(low))  # x max|logit|, as the self-check
                redo = [i for i, p in enumerate(plans) if any(g <= limit for g in p.gaps)]
                if redo:
                    self.pack_fallbacks += len(redo)
                    again = self.fwd.padded([seqs[i] for i in redo], [need[i] for i in redo])  # no branches
                    for i, p in zip(redo, self._plans([active[i] for i in redo], [drafts[i] for i in redo], again)):
                        plans[i] = p
            for r, plan in zip(active, plans):
                r.forwards += 1
                before = len(r.gen)
                for j, tok in enumerate(plan.tokens):
                    if plan.states is not None:
                        r.fsm_state = plan.states[j]
                    r.near_ties += self._near_tie(plan.gaps[j], plan.tops[j])
                    self._push(r, tok)
                    self.branch_tokens += plan.branch and j == len(plan.tokens) - 1
                    if r.stop:
                        break
                if drafter:
                    drafter.observe(r.gen, len(r.gen) - before)
            done = [r for r in active if r.stop]
            if done:
                active = [r for r in active if not r.stop]
                if progress:
                    progress(len(done))

    def _draft(self, r: _Row, drafter) -> tuple[list[int], list[tuple[int, int]]]:
        """(draft, side branches) for a row's next forward."""
        if drafter is None:
            return [], []
        k = min(self.max_draft, self.max_new_tokens - len(r.gen) - 1)
        width = self.max_branches if self.fwd.pack and self.fwd.packing is not False else 0  # padded: none
        return drafter.draft_tree(r.gen, k, width, r.lookup, r.prompt)

    def _plans(self, rows: list[_Row], drafts: list[list[int]], logits,
               branches: list[list[tuple[int, int]]] | None = None) -> list[_Plan]:
        """Per row, the tokens its slice of `logits` accepts: greedy (or masked greedy) at each
        drafted position while the draft agrees, plus the next choice, plus - where a side branch
        at that depth holds that choice - the choice after it, from the branch's own logits."""
        if self.mode in ("constrained", "score"):
            out, at = [], 0
            for r, d in zip(rows, drafts):
                out.append(self._plan_constrained(r, d, logits[at:at + len(d) + 1]))
                at += len(d) + 1
            return out
        greedy, gap, top = greedy_choices(logits)  # one top-2 over the whole forward, then plain lists
        out, at = [], 0
        for i, d in enumerate(drafts):
            n = 0
            while n < len(d) and greedy[at + n] == d[n]:
                n += 1
            plan = _Plan(greedy[at:at + n + 1], gap[at:at + n + 1], top[at:at + n + 1])
            alt = branches[i] if branches else []
            if (n, plan.tokens[-1]) in alt:
                j = at + len(d) + 1 + alt.index((n, plan.tokens[-1]))
                plan.branch = True
                plan.tokens.append(greedy[j])
                plan.gaps.append(gap[j])
                plan.tops.append(top[j])
            out.append(plan)
            at += len(d) + 1 + len(alt)
        return out

    def _plan_constrained(self, row: _Row, draft: list[int], logits) -> _Plan:
        fsm = self._fsm(row.taxonomy)
        vocab = logits.shape[-1]
        state, plan = row.fsm_state, _Plan([], [], [], [])
        for j in range(len(draft) + 1):
            allowed = fsm.mask(state, self.max_new_tokens - len(row.gen) - j)[:vocab].to(logits.device)
            masked = logits[j].masked_fill(~allowed, float("-inf"))
            tok = int(masked.argmax())
            top = masked.topk(min(2, vocab)).values.tolist()
            gap = top[0] - top[1] if len(top) > 1 and top[1] != float("-inf") else float("inf")
            state = fsm.advance(state, tok)
            plan.tokens.append(tok)
            plan.gaps.append(gap)
            plan.tops.append(abs(top[0]))
            plan.states.append(state)
            if j == len(draft) or tok != draft[j] or fsm.is_done(state):
                break
        return plan

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

        def scores_of(logits, toks, common) -> list[float]:
            out, at = [], 0
            for t in toks:
                n = len(t) - common
                logp = torch.log_softmax(logits[at:at + n], dim=-1)
                out.append(sum(float(logp[j, t[common + j]]) for j in range(n)))
                at += n
            return out

        for r in rows:
            labels, toks, common = cands[r.taxonomy]
            # Position j of a candidate's own logits predicts its token common + j.
            seqs, need = [r.prompt + t[:-1] for t in toks], [len(t) - common for t in toks]
            logits, packed = self.fwd(seqs, need)
            scores = scores_of(logits, toks, common)
            if packed and len(scores) > 1:
                # Each log-probability may move by twice the logit tolerance: a closer race
                # between the best two labels is scored again, padded.
                first, second = sorted(scores, reverse=True)[:2]
                if first - second <= 2 * max(need) * 2 * PACK_TOLERANCE * float(logits.abs().max()):
                    self.pack_fallbacks += 1
                    scores = scores_of(self.fwd.padded(seqs, need), toks, common)
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
        from transformers import StoppingCriteriaList

        dev = self.fwd.device
        for r in rows:
            ids = torch.tensor([r.prompt], dtype=torch.long, device=dev)
            stop = JsonStoppingCriteria(self.texts, ids.shape[1])
            with pure_greedy(self.model, sorted(self.eos), self.pad_id, self.max_new_tokens, use_cache=False) as cfg:
                out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=cfg,
                                          stopping_criteria=StoppingCriteriaList([stop]),
                                          output_logits=True, return_dict_in_generate=True)
            new = out.sequences[0, ids.shape[1]:].tolist()
            _, gaps, tops = greedy_choices(torch.cat(out.logits).float()) if out.logits and new else ([], [], [])
            for j, tok in enumerate(new):
                r.near_ties += self._near_tie(gaps[j], tops[j])
                self._push(r, tok)
                r.forwards += 1
                if r.stop:
                    break
            self.fwd.calls += r.forwards
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
    from ..fsm import SkeletonFSM

    for tax in dict.fromkeys(taxonomies):
        _check_budget(SkeletonFSM(taxonomy_labels(tax), token_texts(tokenizer)), tax, mode, max_new_tokens)
