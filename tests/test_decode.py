"""KV-off decoders: fast == reference token for token; constrained/score ParseOK; bad input."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch

os.environ.setdefault("EMOLOOM_CACHE", tempfile.mkdtemp(prefix="emoloom-test-cache-"))

from emoloom.contract import JsonCloseScanner, Record, parse_output, render_target  # noqa: E402
from emoloom.eval import testing  # noqa: E402
from emoloom.eval.decoding import (Decoder, Forward, SkeletonDrafter, shared_prefix_groups,  # noqa: E402
                                   slot_blocks)
from emoloom.eval.decoding.packing import same_logits  # noqa: E402
from emoloom.labels import taxonomy  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with testing.torch_threads(1):
        yield


@pytest.fixture(scope="module")
def trained():
    return testing.loaded(str(testing.trained_model_dir()))


_REFERENCE: dict = {}


def reference(name_or_dir: str, records: list[Record], max_new: int):
    key = (name_or_dir, tuple(r.id for r in records), max_new)
    if key not in _REFERENCE:
        c = testing.loaded(name_or_dir)
        dec = Decoder(c.model, c.tokenizer, "reference", max_new_tokens=max_new)
        _REFERENCE[key] = dec.generate(dec.prepare(records))
    return _REFERENCE[key]


@pytest.mark.parametrize("arch", ["tiny-qwen2", "tiny-llama"])
@pytest.mark.parametrize("batch", [1, 8])
def test_fast_equals_reference_random_init(arch, batch):
    recs = testing.mixed_records(8)
    ref = reference(arch, recs, 12)
    c = testing.loaded(arch)
    dec = Decoder(c.model, c.tokenizer, "fast", max_new_tokens=12, batch_size=batch)
    prompts = dec.prepare(recs)
    assert len({len(p.ids) for p in prompts}) > 3  # mixed prompt lengths
    fast = dec.generate(prompts)
    assert [g.tokens for g in fast] == [g.tokens for g in ref]
    assert [g.raw for g in fast] == [g.raw for g in ref]
    assert len({g.raw for g in ref}) > 1, "degenerate model: all outputs identical"
    assert all(g.stop == "max_new_tokens" for g in fast)  # random init never closes its JSON
    if batch == 8:
        assert dec.model_calls < sum(g.forwards for g in fast)  # rows shared forwards


def test_fast_equals_reference_trained(trained):
    recs = testing.mixed_records(8, seed=9)
    path = str(testing.trained_model_dir())
    ref = reference(path, recs, 64)
    dec = Decoder(trained.model, trained.tokenizer, "fast", max_new_tokens=64, batch_size=8)
    fast = dec.generate(dec.prepare(recs))
    assert [g.tokens for g in fast] == [g.tokens for g in ref]
    assert [g.stop for g in fast] == [g.stop for g in ref]
    closed = [g for g in fast if g.stop == "json_closed"]
    assert len(closed) >= 4, [g.raw for g in fast]
    # Skeleton drafts were accepted: fewer forwards than generated tokens.
    assert sum(g.forwards for g in fast) < 0.7 * sum(len(g.tokens) for g in fast)
    # ... and side branches picked up tokens: the same tokens in fewer forwards than without them.
    assert dec.branch_tokens > 0
    plain = Decoder(trained.model, trained.tokenizer, "fast", max_new_tokens=64, batch_size=8, branches=0)
    without = plain.generate(plain.prepare(recs))
    assert [g.tokens for g in without] == [g.tokens for g in ref] and plain.branch_tokens == 0
    assert sum(g.forwards for g in fast) < sum(g.forwards for g in without)
    assert all(g.forwards == len(g.tokens) for g in ref)
    assert sum(parse_output(g.raw, "goemotions").parse_ok for g in fast) >= 3


@pytest.mark.parametrize("arch", ["tiny-qwen2", "tiny-llama"])
def test_packing_shares_the_prompt_start_and_changes_nothing(arch):
    recs = testing.mixed_records(8) + testing.mixed_records(3, seed=2, taxonomy="dailydialog")
    c = testing.loaded(arch)
    packed = Decoder(c.model, c.tokenizer, "fast", max_new_tokens=12, batch_size=8)
    padded = Decoder(c.model, c.tokenizer, "fast", max_new_tokens=12, batch_size=8, pack=False)
    prompts = packed.prepare(recs)
    taxonomies = [r.taxonomy for r in recs]
    out = packed.generate(prompts, taxonomies)
    assert packed._packing is True  # the self-check passed and packed forwards ran
    assert [g.tokens for g in out] == [g.tokens for g in padded.generate(prompts, taxonomies)]
    assert padded._packing is None  # never even checked
    if arch == "tiny-qwen2":  # and against transformers' own KV-off generate
        assert [g.tokens for g in out[:8]] == [g.tokens for g in reference(arch, recs[:8], 12)]


def test_packing_falls_back_where_it_cannot_ride_on_sdpa():
    c = testing.loaded("tiny-llama")
    recs = testing.mixed_records(6)
    before = c.model.config._attn_implementation
    c.model.config._attn_implementation = "eager"  # packing needs transformers' SDPA attention
    try:
        dec = Decoder(c.model, c.tokenizer, "fast", max_new_tokens=8, batch_size=6)
        eager = dec.generate(dec.prepare(recs))
        assert dec._packing is False
    finally:
        c.model.config._attn_implementation = before
    assert len(eager) == 6 and all(len(g.tokens) == 8 for g in eager)


def test_shared_prefix_groups():
    start = list(range(100, 130))
    a, b = start + [1, 2, 3, 4], start + [1, 2, 9]
    other, short = list(range(200, 240)), start[:10]
    groups = shared_prefix_groups([a, b, other, short], need=[1, 1, 1, 1], min_shared=16)
    assert (32, [0, 1]) in groups  # a and b share their first 32 tokens
    assert (0, [2]) in groups and (0, [3]) in groups  # alone, or too short to share anything
    # The wanted positions stay in each row's own part: the start shrinks to leave them out.
    assert shared_prefix_groups([a, b], need=[4, 3], min_shared=16) == [(30, [0, 1])]
    assert shared_prefix_groups([a, b], need=[20, 3], min_shared=16) == [(0, [0]), (0, [1])]


def test_slot_blocks_cut_rows_of_unlike_length_apart():
    # Two long rows and five short ones: one slot size for all would pad the short ones by 60.
    lengths = [80, 12, 11, 79, 10, 12, 9]
    blocks = slot_blocks(lengths, block_cost=24)
    assert sorted(i for b in blocks for i in b) == list(range(7))  # every row once
    assert [sorted(b) for b in blocks] == [[0, 3], [1, 2, 4, 5, 6]]
    assert slot_blocks([20, 19, 21], block_cost=24) == [[2, 0, 1]]  # alike: one block, longest first


def test_packed_blocks_give_the_padded_batch_logits():
    c = testing.loaded("tiny-qwen2")
    fwd = Forward(c.model, pad_id=0, vocab=c.model.config.vocab_size, pack=True)
    start = list(range(5, 45))
    seqs = [start + [100 + i] * n for i, n in enumerate((90, 3, 88, 5, 4))]
    need = [3, 1, 2, 4, 1]
    groups = shared_prefix_groups(seqs, need)
    assert groups == [(40, [0, 1, 2, 3, 4])] and len(slot_blocks([len(s) - 40 for s in seqs])) == 2
    with torch.inference_mode():
        assert fwd.packing_ok()  # registers the packed attention, as every decoder's first packed forward does
        assert same_logits(fwd.padded(seqs, need), fwd.packed(seqs, need, groups))


def test_greedy_choices_break_exact_ties_like_generate():
    from emoloom.eval.decoding.greedy import greedy_choices

    logits = torch.zeros(2, 1024)
    logits[0, [30, 700]] = 5.0  # an exact tie, where top-k on this CPU lists 700 first
    logits[1, 9] = 2.0
    tokens, gaps, tops = greedy_choices(logits)
    assert tokens == logits.argmax(-1).tolist() == [30, 9]  # the tie: the first index, as argmax
    assert gaps == [0.0, 2.0] and tops == [5.0, 2.0]


@pytest.mark.parametrize("arch", ["tiny-qwen2", "tiny-llama"])
def test_the_last_layer_runs_at_the_read_positions_only(arch):
    c = testing.loaded(arch)
    fwd = Forward(c.model, pad_id=0, vocab=c.model.config.vocab_size, pack=True)
    full = Forward(c.model, pad_id=0, vocab=c.model.config.vocab_size, pack=True, prune=False)
    start = list(range(5, 45))
    seqs = [start + [100 + i] * n for i, n in enumerate((60, 3, 58, 5))]
    need, branches = [3, 1, 2, 4], [[(1, 7), (2, 8)], [], [(0, 9)], []]
    last = c.model.get_decoder().layers[-1]
    seen = []
    hook = last.mlp.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[-2]))
    try:
        with torch.inference_mode():
            assert fwd.packing_ok() and full.packing_ok()
            seen.clear()
            pruned, _ = fwd(seqs, need, branches)
            assert seen == [sum(need) + 3]  # the last layer's MLP saw the read positions only
            seen.clear()
            before = full.positions
            unpruned, _ = full(seqs, need, branches)
            assert seen == [full.positions - before]  # unpruned: every packed position
    finally:
        hook.remove()
    assert same_logits(unpruned, pruned)
    with torch.inference_mode():  # and both are the padded batch's logits at the rows' own positions
        starts = [sum(n + len(b) for n, b in zip(need[:i], branches[:i])) for i in range(4)]  # a row's own, then its branches
        assert same_logits(fwd.padded(seqs, need), torch.cat([pruned[a:a + n] for a, n in zip(starts, need)]))


@pytest.mark.parametrize("model_type", ["qwen3", "mistral"])
def test_other_pre_norm_architectures_are_pruned_and_exact(model_type):
    """The last-layer pruning relies on the layer's pre-norm residual form: checked beyond the two
    built-in architectures on random tiny models of the others it is enabled for."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = testing.loaded("tiny-qwen2").tokenizer
    config = AutoConfig.for_model(model_type, vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                  max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
                                  eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    recs = testing.mixed_records(6)
    ref = Decoder(model, tok, "reference", max_new_tokens=10)
    fast = Decoder(model, tok, "fast", max_new_tokens=10, batch_size=6)
    prompts = fast.prepare(recs)
    assert fast.fwd.last_layer is model.get_decoder().layers[-1]
    assert [g.tokens for g in fast.generate(prompts)] == [g.tokens for g in ref.generate(prompts)]
    assert fast._packing is True  # the packed (and pruned) forward passed its self-check and ran


def test_a_branch_token_sees_the_row_up_to_its_depth_and_itself():
    c = testing.loaded("tiny-qwen2")
    fwd = Forward(c.model, pad_id=0, vocab=c.model.config.vocab_size, pack=True)
    start = list(range(5, 45))
    seqs = [start + [100 + i] * n for i, n in enumerate((30, 6, 12))]
    need = [4, 1, 3]  # drafts of 3, 0 and 2 tokens at the end of each row
    branches = [[(0, 7), (0, 8), (2, 9), (3, 10)], [(0, 11)], []]
    with torch.inference_mode():
        assert fwd.packing_ok()
        logits, packed = fwd(seqs, need, branches)
        assert packed and logits.shape[0] == sum(need) + 5
        # Alone, each branch is its row cut before the branch's depth, plus the branch token.
        alone = [seqs[0][:len(seqs[0]) - 3 + d] + [t] for d, t in branches[0]] + [seqs[1] + [11]]
        expected = fwd.padded(alone, [1] * len(alone))
    got = torch.cat([logits[4:8], logits[9:10]])
    assert same_logits(expected, got)
    # A padded forward (no shared start to pack) leaves the branches out.
    with torch.inference_mode():
        logits, packed = fwd([[1, 2, 3], [4, 5]], [1, 1], [[(0, 6)], []])
    assert not packed and logits.shape[0] == 2


def test_constrained_parse_ok_on_random_model():
    c = testing.loaded("tiny-llama")
    recs = (testing.mixed_records(3, taxonomy="goemotions") + testing.mixed_records(2, taxonomy="dailydialog")
            + testing.mixed_records(2, taxonomy="empathetic"))
    dec = Decoder(c.model, c.tokenizer, "constrained", max_new_tokens=64, batch_size=4)
    gens = dec.generate(dec.prepare(recs), [r.taxonomy for r in recs])
    for g, r in zip(gens, recs):
        parsed = parse_output(g.raw, r.taxonomy)
        assert parsed.parse_ok, (g.raw, parsed)
        assert g.stop == "json_closed" and len(g.tokens) <= 64
        assert set(parsed.labels) <= set(taxonomy(r.taxonomy))
        for x in parsed.vad.as_tuple():
            assert round(x, 2) == x


def test_constrained_closes_within_a_tight_budget():
    c = testing.loaded("tiny-qwen2")
    dec = Decoder(c.model, c.tokenizer, "constrained", max_new_tokens=40, batch_size=4)
    gens = dec.generate(dec.prepare(testing.mixed_records(4)))
    assert all(parse_output(g.raw, "goemotions").parse_ok and len(g.tokens) <= 40 for g in gens)
    with pytest.raises(ValueError, match="max_new_tokens"):
        Decoder(c.model, c.tokenizer, "constrained", max_new_tokens=8).generate(dec.prepare(testing.mixed_records(1)))


def test_score_decoder(trained):
    import torch

    recs = testing.mixed_records(4, seed=3)
    dec = Decoder(trained.model, trained.tokenizer, "score", max_new_tokens=64, batch_size=4)
    prompts = dec.prepare(recs)
    gens = dec.generate(prompts)
    labels = taxonomy("goemotions")
    for g in gens:
        parsed = parse_output(g.raw, "goemotions")
        assert parsed.parse_ok
        assert set(g.label_scores) == set(labels)
        assert parsed.labels == [max(labels, key=lambda l: g.label_scores[l])]
        assert g.forwards >= 1
    # The batched, left-padded score equals a plain unpadded computation for one candidate.
    tok = trained.tokenizer
    label = "joy"
    cand = tok('{"labels":["' + label + '"],"vad":{"v":', add_special_tokens=False)["input_ids"]
    first = tok('{"labels":["admiration"],"vad":{"v":', add_special_tokens=False)["input_ids"]
    common = next(i for i, (a, b) in enumerate(zip(cand, first)) if a != b)
    ids = torch.tensor([prompts[0].ids + cand])
    with torch.inference_mode():
        logp = torch.log_softmax(trained.model(ids).logits[0].float(), -1)
    p = len(prompts[0].ids)
    plain = sum(float(logp[p + j - 1, cand[j]]) for j in range(common, len(cand)))
    assert gens[0].label_scores[label] == pytest.approx(plain, abs=1e-3)
    # The candidates share the prompt: packed, it is computed once per prompt, scores unchanged.
    assert dec._packing is True
    padded = Decoder(trained.model, trained.tokenizer, "score", max_new_tokens=64, batch_size=4, pack=False)
    for g, h in zip(gens, padded.generate(prompts)):
        assert g.tokens == h.tokens
        assert g.label_scores == pytest.approx(h.label_scores, abs=1e-3)


def test_long_text_is_truncated_with_flag():
    c = testing.loaded("tiny-qwen2")
    long = Record(id="long", text=("word " * 2500).strip() + " the end")  # 10,000+ characters
    assert len(long.text) >= 10_000
    dec = Decoder(c.model, c.tokenizer, "fast", max_new_tokens=8)
    [p] = dec.prepare([long])
    assert p.truncated and len(p.ids) <= dec.window - 8
    assert p.text.startswith("Classify the emotion") and "Answer with one line of JSON" in p.text
    assert "the end" in p.text  # the end of the text is kept, its start dropped
    [g] = dec.generate([p])
    assert len(g.tokens) == 8


def test_empty_text_and_never_closing_output():
    c = testing.loaded("tiny-qwen2")
    dec = Decoder(c.model, c.tokenizer, "fast", max_new_tokens=6)
    [p] = dec.prepare([Record(id="e", text="")])
    assert "Text: \n" in p.text and not p.truncated
    [g] = dec.generate([p])
    parsed = parse_output(g.raw, "goemotions")
    assert g.stop == "max_new_tokens" and not parsed.parse_ok and parsed.error in ("no_json", "unbalanced")


def test_json_close_scanner():
    s = JsonCloseScanner()
    assert not s.feed('prose, then {"a":"}{\\"')  # braces and an escaped quote inside a string
    assert s.feed('x"}')  # the string ends at the unescaped quote; "}" closes the object
    assert s.closed and s.feed("more")
    s = JsonCloseScanner()
    assert not s.feed('{"a":{"b":1}')
    assert s.feed("}")
    s = JsonCloseScanner()
    assert not s.feed('no object "yet" }')  # quotes and stray braces outside an object are prose
    assert not s.feed("a {prose} span, ")  # not JSON-looking: does not end the answer
    assert not s.feed('{ "labels": [')
    assert s.feed("]}")
    assert JsonCloseScanner().feed("{ }")  # empty counts as JSON, as in the contract


def test_drafter_follows_the_template():
    c = testing.loaded("tiny-qwen2")
    tok = c.tokenizer
    drafter = SkeletonDrafter(tok, ["goemotions"])
    text = lambda ids: tok.decode(ids)  # noqa: E731
    assert text(drafter.session().draft([], 16)) == '{"labels":["'
    target = tok(render_target(["joy"], (0.5, 0.5, 0.5), "x"), add_special_tokens=False)["input_ids"]
    upto = next(i for i in range(len(target)) if text(target[:i]).endswith('"],"'))
    assert text(drafter.session().draft(target[:upto], 16)).startswith('vad":{"v":')
    assert drafter.session().draft(target[:upto], 0) == []


def test_fsm_accepts_exactly_the_contract():
    from emoloom.eval.decoding import token_texts
    from emoloom.eval.fsm import SkeletonFSM

    fsm = SkeletonFSM(taxonomy("goemotions"), token_texts(testing.loaded("tiny-qwen2").tokenizer))
    start = fsm.key(fsm.start)
    key, added = fsm.feed(start, render_target(["joy", "love"], (0.5, 0.25, 1.0), "cues: happy"))
    assert key == ("done",) and added == len("cues: happy")
    for bad in ('{"labels":["happiness"', '{"labels":["joy","joy"', '{"labels":[]',
                '{"labels":["joy"],"vad":{"v":1.5', '{"labels":["joy"],"vad":{"v":0.5,',
                '{"labels":["joy"],"vad":{"v":0.50,"a":0.50,"d":0.50},"rationale":"a\\n',
                '{"labels":["joy"],"vad":{"v":0.50,"a":0.50,"d":0.50},"rationale":"a\n'):
        assert fsm.feed(start, bad) is None, bad

