"""One KV-off forward over many token sequences: logits at the positions each row needs.

Nothing is kept between forwards: every call recomputes every prefix from the token ids. Rows
are right-padded into a batch, or packed into one sequence where they share a prompt start
(`packing`) and packing passed its self-check on this model. A packed forward also prunes the
last layer to the positions whose logits are read (`last_layer_at`).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

from .packing import (MIN_SHARED, PACK_KWARG, PackPlan, packed_attention_on, same_logits, shared_prefix_groups,
                      slot_blocks, supports_packing)

__all__ = ["Forward", "backbone_and_head"]

# Decoder layers of the form x + attn(norm(x)), then x + mlp(norm(x)), with these module names.
PRUNABLE = ("llama", "qwen2", "qwen3", "mistral")


def backbone_and_head(model):
    """(backbone, output layer, logit softcap) of a causal LM, or None when it does not split so."""
    try:
        backbone, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if backbone is None or head is None or backbone is model:
        return None
    return backbone, head, getattr(model.config, "final_logit_softcapping", None)


def prunable_last_layer(model, split):
    """The last decoder layer, where it has the pre-norm residual form `last_layer_at` relies on;
    else None."""
    if split is None or getattr(model.config, "model_type", None) not in PRUNABLE:
        return None
    layers = getattr(split[0], "layers", None)
    layer = layers[-1] if layers else None
    parts = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
    return layer if layer is not None and all(hasattr(layer, p) for p in parts) else None


@contextmanager
def last_layer_at(layer, plan, read):
    """Run `layer` (the model's last) at the packed positions `read` only: its keys and values
    still come from every position, but only the read positions' queries are attended
    (`plan.pruned`) and only they go through the MLP. Every other output of the last layer would
    feed nothing but logits nobody reads. On the 2-layer tiny-qwen2 that made the fast decoder
    1.2-1.3x faster (bench/eval_speed.py, `fast_no_prune`)."""
    def forward(hidden_states, **kwargs):
        plan.pruned = True
        try:
            attn, _ = layer.self_attn(hidden_states=layer.input_layernorm(hidden_states), **kwargs)
        finally:
            plan.pruned = False
        x = hidden_states[:, read] + attn[:, read]
        x = x + layer.mlp(layer.post_attention_layernorm(x))
        return hidden_states.index_copy(1, read, x)  # the other positions: never read

    layer.forward = forward
    try:
        yield
    finally:
        del layer.forward  # back to the class's forward


class Forward:
    """KV-off forwards of one model. `calls` counts them; `packing` is None until packing is
    first wanted, then whether its self-check passed."""

    def __init__(self, model, pad_id: int, vocab: int, pack: bool | None = None, prune: bool = True) -> None:
        self.model, self.pad_id, self.vocab = model, pad_id, vocab
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.split = backbone_and_head(model)
        # None packs where it was measured to pay (a CPU model); True packs on any device, False
        # never. Either way only after `packing_ok`'s check.
        self.pack = pack if pack is not None else self.device.type == "cpu"
        self.last_layer = prunable_last_layer(model, self.split) if prune else None
        self.packing: bool | None = None
        self.calls = 0
        self.positions = 0  # token positions computed, pads included: the compute, whatever the load

    def __call__(self, seqs: list[list[int]], need: list[int], branches=None):
        """(logits, packed?): per sequence the logits of its last `need_i` positions, then, packed
        only, those of each of its side branches `branches_i` [(depth, token)]: a token in place
        of the one at `depth` among those last `need_i - 1` (depth `need_i - 1`: after the
        sequence), seeing what comes before that depth and itself - a one-level token tree. A
        padded forward leaves branches out."""
        if self.pack and len(seqs) > 1:
            groups = shared_prefix_groups(seqs, need)
            if any(shared for shared, _ in groups) and self.packing_ok():
                return self.packed(seqs, need, groups, branches), True
        return self.padded(seqs, need), False

    def padded(self, seqs: list[list[int]], need: list[int]):
        """A right-padded batch without an attention mask: under causal attention a position
        never sees the pads after it, so every kept position is computed as it would be alone
        (and the fused causal kernel is used instead of a masked one)."""
        import torch

        width = max(len(s) for s in seqs)
        pad = self.pad_id
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], dtype=torch.long)
        rows = [i for i, n in enumerate(need) for _ in range(n)]
        cols = [c for s, n in zip(seqs, need) for c in range(len(s) - n, len(s))]
        return self.logits(ids, (torch.tensor(rows), torch.tensor(cols)))

    def logits(self, ids, at, **kwargs):
        """One forward of `ids` [B, T]; float logits [n, V] at the positions `at` (an index of
        the [B, T] grid). Only those positions go through the output layer."""
        import torch

        ids = ids.to(self.device)
        self.calls += 1
        self.positions += ids.numel()
        if self.split is not None:
            backbone, head, softcap = self.split
            hidden = backbone(input_ids=ids, use_cache=False, **kwargs).last_hidden_state
            logits = head(hidden[at]).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            return logits
        # a model without get_decoder/get_output_embeddings: full logits, then gather
        return self.model(input_ids=ids, use_cache=False, **kwargs).logits[at].float()

    def packed(self, seqs: list[list[int]], need: list[int], groups, branches=None):
        """One packed sequence: per group its shared start once, then one slot per member holding
        the member's remaining tokens and its branch tokens (right-padded to the longest of its
        block: `slot_blocks`), with the position ids they have in the member's own sequence (a
        branch token at the position of the token it stands in for). `packed_attention` keeps rows
        apart, and a branch token from its sibling branches."""
        import torch

        branches = branches or [[] for _ in seqs]
        ids: list[int] = []
        position: list[int] = []
        layout, ends = [], [0] * len(seqs)
        pad = self.pad_id
        for shared, members in groups:
            start = len(ids)
            ids += seqs[members[0]][:shared]
            position += range(shared)
            blocks = []
            lengths = [len(seqs[i]) - shared + len(branches[i]) for i in members]  # own tokens + branches
            for block in slot_blocks(lengths):
                slot = max(lengths[b] for b in block)
                block = [members[b] for b in block]
                trees, picks = [], []
                for i in block:
                    own, alt = seqs[i][shared:], branches[i]
                    ends[i] = len(ids) + len(own)
                    base = len(seqs[i]) - (need[i] - 1)  # where the drafted tokens start
                    ids += own + [t for _, t in alt] + [pad] * (slot - len(own) - len(alt))
                    picks.append((len(own) - need[i], len(own) + len(alt)))  # the read positions
                    position += range(shared, len(seqs[i]))
                    position += [base + depth for depth, _ in alt]
                    position += range(len(seqs[i]) + 1, len(seqs[i]) + 1 + slot - len(own) - len(alt))
                    # per branch: the own tokens it sees (those before its depth)
                    trees.append((len(own), [base - shared + depth for depth, _ in alt]))
                blocks.append((len(block), slot, trees if any(seen for _, seen in trees) else None,
                               picks if self.last_layer is not None else None))
            layout.append((start, shared, blocks))
        cols = [c for i, n in enumerate(need) for c in (*range(ends[i] - n, ends[i]),
                                                       *range(ends[i], ends[i] + len(branches[i])))]
        plan = PackPlan.build(layout, self.device, self.dtype)
        read = torch.tensor(cols, device=self.device)
        with packed_attention_on(self.model), (last_layer_at(self.last_layer, plan, read)
                                               if self.last_layer is not None else nullcontext()):
            logits = self.logits(torch.tensor([ids], dtype=torch.long), (0, read),
                                 position_ids=torch.tensor([position], device=self.device), **{PACK_KWARG: plan})
        if not plan.used:  # the model never called our attention: rows would have seen each other
            raise RuntimeError("packed decoding needs transformers' attention interface; use pack=False")
        return logits

    def packing_ok(self) -> bool:
        """Packing is trusted once it reproduces the padded batch on a small forward (three rows
        sharing a start), checked on first use; otherwise this model stays padded."""
        if self.packing is None:
            self.packing = False
            if supports_packing(self.model):
                import torch

                g = torch.Generator().manual_seed(0)
                start = torch.randint(0, self.vocab, (MIN_SHARED + 8,), generator=g).tolist()
                seqs = [start + torch.randint(0, self.vocab, (n,), generator=g).tolist() for n in (37, 50, 41)]
                need, calls, positions = [4, 9, 1], self.calls, self.positions
                padded = self.padded(seqs, need)
                try:
                    self.packing = same_logits(padded, self.packed(seqs, need, shared_prefix_groups(seqs, need)))
                except RuntimeError:
                    pass
                self.calls, self.positions = calls, positions
        return self.packing
