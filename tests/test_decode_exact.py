"""Exactness by construction: a checkpoint's own generation settings never reach the decoders,
near ties are counted, packing never changes a token, and identity holds with 2 torch threads."""
from __future__ import annotations

import json
import os
import tempfile

import pytest

os.environ.setdefault("EMOLOOM_CACHE", tempfile.mkdtemp(prefix="emoloom-test-cache-"))

from emoloom.eval import testing  # noqa: E402
from emoloom.eval.decoding import Decoder, hf_generate_cached  # noqa: E402

MAX_NEW = 10


def plain_argmax(model, prompts, eos: set[int], max_new: int) -> list[list[int]]:
    """Greedy without generate: one full forward per token, argmax of the last position."""
    import torch

    out = []
    with torch.inference_mode():
        for p in prompts:
            gen: list[int] = []
            while len(gen) < max_new:
                tok = int(model(torch.tensor([p.ids + gen]), use_cache=False).logits[0, -1].argmax())
                gen.append(tok)
                if tok in eos:
                    break
            out.append(gen)
    return out


@pytest.fixture(scope="module")
def opinionated(tmp_path_factory):
    """tiny-qwen2 saved with a generation_config.json that sets every setting greedy must ignore;
    the suppressed and banned tokens are ones plain argmax emits, so they would change the text."""
    from transformers import GenerationConfig

    from emoloom.models import load_base

    base = load_base("tiny-qwen2")
    dec = Decoder(base.model, base.tokenizer, "reference", max_new_tokens=MAX_NEW)
    prompts = dec.prepare(testing.mixed_records(4))
    plain = plain_argmax(base.model, prompts, dec.eos, MAX_NEW)
    out = tmp_path_factory.mktemp("opinionated")
    base.model.save_pretrained(out)
    base.tokenizer.save_pretrained(out)
    own = base.model.generation_config
    GenerationConfig(eos_token_id=own.eos_token_id, pad_token_id=own.pad_token_id, bos_token_id=own.bos_token_id,
                     do_sample=True, temperature=0.7, top_k=5, repetition_penalty=1.3, no_repeat_ngram_size=2,
                     suppress_tokens=[plain[0][0]], bad_words_ids=[[plain[1][1]]], min_new_tokens=MAX_NEW,
                     ).save_pretrained(out)
    return out, prompts, plain


def test_checkpoint_generation_settings_are_ignored(opinionated):
    import torch

    path, prompts, plain = opinionated
    c = testing.loaded(str(path))
    ref_dec = Decoder(c.model, c.tokenizer, "reference", max_new_tokens=MAX_NEW)
    plain_model = testing.loaded("tiny-qwen2")
    assert Decoder(plain_model.model, plain_model.tokenizer, "reference").ignored_settings == {}  # nothing to report
    assert set(ref_dec.ignored_settings) >= {"do_sample", "temperature", "top_k", "repetition_penalty",
                                             "no_repeat_ngram_size", "suppress_tokens", "bad_words_ids",
                                             "min_new_tokens"}
    ref = ref_dec.generate(prompts)
    fast = Decoder(c.model, c.tokenizer, "fast", max_new_tokens=MAX_NEW, batch_size=4).generate(prompts)
    cached = hf_generate_cached(c.model, c.tokenizer, prompts, MAX_NEW, batch_size=4)
    assert [g.tokens for g in ref] == [g.tokens for g in fast] == plain
    assert [g.tokens for g in cached] == plain
    assert c.model.generation_config.repetition_penalty == 1.3  # the model is left as it was
    # The test bites: generate with the checkpoint's defaults filling the unset fields (what the
    # reference did before) gives other text.
    inherited = []
    for p in prompts:
        ids = torch.tensor([p.ids])
        seq = c.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, use_cache=False,
                               max_new_tokens=MAX_NEW)
        inherited.append(seq[0, len(p.ids):].tolist())
    assert inherited != plain
    assert inherited[0][0] != plain[0][0]  # the suppressed token is gone


def test_evaluate_reports_ignored_settings_and_near_ties(opinionated, tmp_path):
    from emoloom.eval.run import EvalConfig, evaluate
    from emoloom.models import ModelSpec

    path, _, _ = opinionated
    lines: list[str] = []
    cfg = EvalConfig(model=ModelSpec(name=str(path)), max_new_tokens=MAX_NEW, bootstrap=0, out=str(tmp_path))
    result = evaluate(cfg, testing.mixed_records(3), log=lines.append)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["ignored_generation_settings"]["repetition_penalty"] == 1.3
    assert metrics["ignored_generation_settings"] == result["ignored_generation_settings"]
    assert metrics["near_ties"] == 0  # fp32: no choice within float32's resolution
    assert sum("ignores the checkpoint's generation settings" in line for line in lines) == 1
    rows = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert all(r["near_ties"] == 0 for r in rows)


@pytest.fixture(scope="module")
def tied():
    """A fresh tiny-qwen2 whose output layer holds one token twice: wherever the first copy is
    the greedy choice the top-2 gap is exactly 0, a near tie in any dtype."""
    import torch

    from emoloom.models import load_base

    c = load_base("tiny-qwen2")
    dec = Decoder(c.model, c.tokenizer, "reference", max_new_tokens=MAX_NEW)
    prompts = dec.prepare(testing.mixed_records(8))
    first = plain_argmax(c.model, prompts[:1], dec.eos, 1)[0][0]
    twin = max(i for i in range(len(dec.texts)) if i != first)
    head = c.model.get_output_embeddings()
    with torch.no_grad():
        if head.weight.data_ptr() == c.model.get_input_embeddings().weight.data_ptr():
            head.weight = torch.nn.Parameter(head.weight.detach().clone())  # untie: change the head only
        head.weight[twin] = head.weight[first]
        if getattr(head, "bias", None) is not None:
            head.bias[twin] = head.bias[first]
    return c, prompts, first


def test_near_ties_are_counted_and_packing_falls_back(tied):
    c, prompts, first = tied
    ref = Decoder(c.model, c.tokenizer, "reference", max_new_tokens=MAX_NEW).generate(prompts)
    packed = Decoder(c.model, c.tokenizer, "fast", max_new_tokens=MAX_NEW, batch_size=8)
    fast = packed.generate(prompts)
    padded = Decoder(c.model, c.tokenizer, "fast", max_new_tokens=MAX_NEW, batch_size=8, pack=False)
    assert [g.tokens for g in fast] == [g.tokens for g in ref] == [g.tokens for g in padded.generate(prompts)]
    assert ref[0].tokens[0] == first and ref[0].near_ties >= 1  # the twin's tie was seen ...
    assert [g.near_ties for g in fast] == [g.near_ties for g in ref]  # ... and counted alike
    assert packed._packing is True and packed.pack_fallbacks >= 1  # its steps were recomputed padded


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-llama", "trained"])
def test_fast_equals_reference_with_two_threads(name):
    recs = testing.mixed_records(8, seed=9)
    max_new = 48 if name == "trained" else 12
    c = testing.loaded(str(testing.trained_model_dir()) if name == "trained" else name)
    with testing.torch_threads(2):
        ref_dec = Decoder(c.model, c.tokenizer, "reference", max_new_tokens=max_new)
        prompts = ref_dec.prepare(recs)
        ref = ref_dec.generate(prompts)
        for pack in (True, False):
            fast = Decoder(c.model, c.tokenizer, "fast", max_new_tokens=max_new, batch_size=8, pack=pack)
            assert [g.tokens for g in fast.generate(prompts)] == [g.tokens for g in ref], pack


def test_hf_cache_counts_each_prompt_once_then_a_position_per_cached_step():
    from emoloom.contract import Record

    c = testing.loaded("tiny-qwen2")
    dec = Decoder(c.model, c.tokenizer, "reference", max_new_tokens=MAX_NEW)
    prompts = dec.prepare([Record(id=str(i), text=t) for i, t in
                           enumerate(["so happy today", "a longer text about a lost job and a bad day", "meh"])])
    counts: dict = {}
    gens = hf_generate_cached(c.model, c.tokenizer, prompts, MAX_NEW, batch_size=2, counts=counts)
    # batches of the length-sorted prompts, each padded to its longest; its longest answer sets the steps
    order = sorted(range(3), key=lambda i: len(prompts[i].ids))
    expected = 0
    for batch in (order[:2], order[2:]):
        width = max(len(prompts[i].ids) for i in batch)
        steps = max(len(gens[i].tokens) for i in batch)
        expected += len(batch) * (width + steps - 1)
    assert counts == {"positions": expected}
