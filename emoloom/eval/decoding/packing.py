"""Packing rows that share a prompt start into one sequence that holds that start once.

Rows whose prompts start alike (the instruction and label list every prompt of a taxonomy
repeats) are packed into one sequence; each row attends to the shared start and to its own tokens
(`packed_attention`). Every forward still recomputes every prefix from the token ids - nothing is
kept between forwards - it just does not compute the same prompt start sixteen times.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

__all__ = ["MIN_SHARED", "PACK_TOLERANCE", "PACK_KWARG", "PACK_ATTENTION", "shared_prefix_groups", "slot_blocks",
           "PackPlan", "packed_attention", "same_logits", "supports_packing", "packed_attention_on"]

MIN_SHARED = 16  # shortest shared prompt start worth packing rows for
# Packed logits may differ from the padded batch's by this share of max|logit| (SDPA kernels pick
# their blocking by query/key length, so the last bits can differ).
PACK_TOLERANCE = 1e-4
PACK_KWARG = "emoloom_pack"
# An extra block of slots costs one more attention call per layer; a block is split off when it
# saves more than this many padded positions.
BLOCK_COST = 24
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


def slot_blocks(lengths: Sequence[int], block_cost: int = BLOCK_COST) -> list[list[int]]:
    """Members (indices into `lengths`, their own token counts) cut into blocks of similar length,
    longest first: each block pads its members to its longest only. Rows in a batch are at
    different points of their answers, so one slot size for all pads about a fifth of a forward.
    The cut minimizes padded positions plus `block_cost` per block (a small dynamic program)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j members (sorted)
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # members i..j-1 in one block, padded to lengths[order[i]]
            cost = best[i] + block_cost + (j - i) * lengths[order[i]]
            if cost < best[j]:
                best[j], cut[j] = cost, i
    blocks, j = [], n
    while j > 0:
        blocks.append(order[cut[j]:j])
        j = cut[j]
    return blocks[::-1]


@dataclass
class PackPlan:
    """The layout of a packed sequence, for `packed_attention`: per group (start, shared, blocks) -
    the shared start at [start, start + shared), then blocks of (rows, slot, mask): `rows` slots of
    `slot` tokens each, and the mask that lets a slot's tokens see the shared start and, causally,
    their own slot (None when nothing is shared and no slot holds branches). A block whose slots
    hold branch tokens gets a mask per row that hides sibling branches from each other. Built
    once per forward, used by every layer; `used` records that the model's attention went
    through `packed_attention` at all. A block's pick (built from its rows' read positions)
    lets `pruned` attention compute only the queries whose outputs are read: in the last layer
    nothing else is (`forward.last_layer_at`)."""

    groups: list
    used: bool = False
    pruned: bool = False

    @classmethod
    def build(cls, layout, device, dtype=None) -> "PackPlan":
        """`layout`: per group (start, shared, blocks), a block (rows, slot, trees, picks): trees
        None, or per row (own tokens, per branch token after them: how many own tokens it sees);
        picks None, or per row the slot positions [lo, hi) whose outputs are read."""
        import torch

        groups, masks = [], {}
        for start, shared, blocks in layout:
            built, at = [], start + shared
            for rows, slot, trees, picks in blocks:
                mask = None
                if shared or trees or picks:
                    if (shared, slot) not in masks:
                        keep = torch.ones(slot, shared + slot, dtype=torch.bool).tril(shared)
                        masks[shared, slot] = _additive(keep, dtype)
                    mask = masks[shared, slot]
                if trees:
                    mask = mask.expand(rows, -1, -1, -1).clone()
                    for r, (own, seen) in enumerate(trees):
                        for j, n in enumerate(seen):  # branch j: the own tokens before its depth, and itself
                            mask[r, 0, own + j, shared + n:shared + own + j] = float("-inf")
                pick = None
                if picks:
                    # Each row's read positions, the last repeated to one width (a repeated query
                    # computes the same output again, into the same position).
                    width = max(hi - lo for lo, hi in picks)
                    idx = torch.tensor([[min(lo + j, hi - 1) for j in range(width)] for lo, hi in picks])
                    keys = mask.shape[-1]
                    sel_mask = mask.expand(rows, -1, -1, -1).gather(2, idx[:, None, :, None].expand(-1, -1, -1, keys))
                    flat = (at + torch.arange(rows)[:, None] * slot + idx).reshape(-1)
                    pick = (idx[:, None, :, None].to(device), sel_mask.to(device), flat.to(device))
                if not (shared or trees):
                    mask = None  # all queries and only causality: the fused causal kernel
                built.append((rows, slot, None if mask is None else mask.to(device), pick))
                at += rows * slot
            groups.append((start, shared, built))
        return cls(groups)


def _additive(keep, dtype=None):
    """A bool mask [q, k] as SDPA's additive float form [1, 1, q, k]: SDPA converts a bool mask
    in every call of every layer, this is built once per forward (torch profiler on the speed
    bench's fast decoder: attention plus that conversion about 8% less CPU)."""
    import torch

    return torch.zeros(keep.shape, dtype=dtype).masked_fill_(~keep, float("-inf"))[None, None]


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
    # [1, T, H, D], as sdpa_attention_forward returns; pruned, the unread positions stay zero
    out = (query.new_zeros if plan.pruned else query.new_empty)(1, query.shape[2], heads, dim)
    for start, shared, blocks in plan.groups:
        mid = start + shared
        if shared and not plan.pruned:  # pruned, no output of the shared start is read
            out[:, start:mid] = sdpa_attention_forward(module, query[:, :, start:mid], key[:, :, start:mid],
                                                       value[:, :, start:mid], None, **kwargs)[0]
        at = mid
        for rows, slot, mask, pick in blocks:
            end = at + rows * slot

            def slots(x, n_heads):  # [1, h, T, D] -> [rows, h, slot, D] over this block's slots
                return x[0, :, at:end].reshape(n_heads, rows, slot, dim).transpose(0, 1)

            q, k, v = slots(query, heads), slots(key, kv_heads), slots(value, kv_heads)
            if shared:
                k = torch.cat([key[:, :, start:mid].expand(rows, -1, -1, -1), k], dim=2)
                v = torch.cat([value[:, :, start:mid].expand(rows, -1, -1, -1), v], dim=2)
            if plan.pruned:
                idx, sel_mask, flat = pick
                q = q.gather(2, idx.expand(-1, heads, -1, dim))
                out[0, flat] = sdpa_attention_forward(module, q, k, v, sel_mask, **kwargs)[0].reshape(-1, heads, dim)
            else:
                out[0, at:end] = sdpa_attention_forward(module, q, k, v, mask, **kwargs)[0].reshape(rows * slot, heads, dim)
            at = end
    return out, None


def same_logits(a, b) -> bool:
    """Packed logits agree with the padded batch's: the same greedy token everywhere and no
    more than `PACK_TOLERANCE` x max|logit| apart (a row seeing another row's tokens moves
    logits by whole units)."""
    import torch

    scale = float(a.abs().max()) or 1.0
    return bool(torch.equal(a.argmax(-1), b.argmax(-1))) and float((a - b).abs().max()) <= PACK_TOLERANCE * scale


def supports_packing(model) -> bool:
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
def packed_attention_on(model):
    """Route the model's attention through `packed_attention` for one forward. No mask function
    is registered under that name, so transformers builds no mask of its own."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = PACK_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before
