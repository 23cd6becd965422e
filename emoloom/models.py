"""Candidate base models: built-in tiny models (built offline, deterministic) and hub ids / paths.

A built-in model is a transformers config written here plus a byte-level BPE tokenizer trained
on the synthetic corpus; both are saved with `save_pretrained` into a cache folder and then loaded
through the same `from_pretrained` path as any hub model, so tests exercise the real loading code.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoloom.config import StrictModel, did_you_mean

# peft reads transformers' deprecated `is_gradient_checkpointing` alias whenever it wraps a model
# (once per trial, epoch evaluation and candidate load): nothing a user can act on.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

# name -> architecture and size. Random init: they learn the contract during SFT.
BUILTIN: dict[str, dict[str, Any]] = {
    "tiny-qwen2": dict(arch="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=128),
    "tiny-llama": dict(arch="llama", hidden_size=96, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=4, intermediate_size=192),
    "small-qwen2": dict(arch="qwen2", hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=256),
    # >= 100M parameters (115M: with the small vocabulary, a 4x MLP is what gets it there), for
    # GPU benchmarks only (too slow to train on 2 CPU cores).
    "base-llama-110m": dict(arch="llama", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            num_key_value_heads=12, intermediate_size=3072),
}
BUILTIN_VOCAB = 1024
BUILTIN_CONTEXT = 1024
TOKENIZER_VERSION = 1  # bump when the tokenizer's training corpus or recipe changes

# LoRA target modules by model_type; unknown types fall back to peft's own defaults.
LORA_TARGETS = {
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "phi3": ["qkv_proj", "o_proj"],
    "gpt2": ["c_attn", "c_proj"],
}


class ModelSpec(StrictModel):
    """Which base model a candidate uses: a built-in name, a hub id, or a local folder."""

    name: str = "tiny-qwen2"
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: str = "auto"  # auto: bf16 on CUDA with bf16 support, else float32
    seed: int = 0  # init seed of built-in models


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    spec: ModelSpec
    path: str  # folder or hub id actually loaded
    revision: str | None = None
    info: dict = field(default_factory=dict)


def cache_dir() -> Path:
    root = os.environ.get("EMOLOOM_CACHE") or Path.home() / ".cache" / "emoloom"
    return Path(root)


def is_builtin(name: str) -> bool:
    return name in BUILTIN


# owner/name as the hub spells repository ids; "./x", "/x", "~/x" and bare names are not hub ids
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def check_name(name: str) -> None:
    """Raise unless `name` can resolve as `load_base` resolves names: a built-in, an existing local
    folder, or a hub id (judged by its owner/name shape only: nothing is looked up).

    FileNotFoundError for a path that is not there (another machine may have it), ValueError for
    a name that is neither (with a did-you-mean against the built-ins)."""
    if is_builtin(name):
        return
    path = Path(name).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise ValueError(f"{name!r} is a file, not a model folder")
    if _HUB_ID.match(name):
        return
    if "/" in name or name.startswith((".", "~")):
        raise FileNotFoundError(f"{name!r}: no such model folder")
    raise ValueError(f"{name!r} is not a built-in model ({', '.join(BUILTIN)}), an existing local folder "
                     f"or a hub id (owner/name){did_you_mean(name, BUILTIN)}")


def tokenizer_corpus() -> list[str]:
    """Texts the built-in tokenizer is trained on: contract prompts and targets of synthetic data."""
    from emoloom.contract import render_prompt, render_target
    from emoloom.data.synthetic import synthetic_records
    from emoloom.labels import TAXONOMIES

    texts: list[str] = []
    for tax in ("goemotions", "empathetic", "dailydialog"):
        for rec in synthetic_records(tax, 400, seed=1234):
            texts.append(render_prompt(rec))
            texts.append(render_target(rec.labels, (0.5, 0.5, 0.5), "cues: " + rec.text[:40]))
    for tax, labels in TAXONOMIES.items():
        texts.append(", ".join(labels))
    texts += [f'"v":{x / 100:.2f},"a":{x / 100:.2f},"d":{x / 100:.2f}' for x in range(101)]
    return texts


def build_tokenizer(out: Path):
    """Byte-level BPE trained offline on `tokenizer_corpus()`; saved as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BUILTIN_VOCAB, min_frequency=2, show_progress=False,
        special_tokens=["<|pad|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   bos_token=None, padding_side="left", model_max_length=BUILTIN_CONTEXT)
    fast.save_pretrained(out)


def builtin_path(name: str, seed: int = 0) -> Path:
    """Folder of a built-in model; built (once, deterministically) when missing."""
    if name not in BUILTIN:
        raise KeyError(f"unknown built-in model {name!r}; built-ins: {', '.join(BUILTIN)}")
    spec = {**BUILTIN[name], "vocab": BUILTIN_VOCAB, "ctx": BUILTIN_CONTEXT, "seed": seed,
            "tok": TOKENIZER_VERSION}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    out = cache_dir() / "models" / f"{name}-{digest}"
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    _atomic_build(out, lambda tmp: _build(name, seed, tmp))
    return out


def _atomic_build(out: Path, build) -> None:
    """Build into a private temp folder, then rename: concurrent builders (Ray workers) never
    see half a model, and the loser of a race just drops its copy."""
    import shutil

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    try:
        tmp.rename(out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _build(name: str, seed: int, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok_dir = cache_dir() / "tokenizers" / f"v{TOKENIZER_VERSION}"
    if not (tok_dir / "tokenizer.json").exists():
        _atomic_build(tok_dir, build_tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    tokenizer.save_pretrained(out)
    arch = dict(BUILTIN[name])
    model_type = arch.pop("arch")
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), max_position_embeddings=BUILTIN_CONTEXT,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False, **arch,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)


def resolve_dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def load_base(spec: ModelSpec | str, device: str | None = None) -> Loaded:
    """Load tokenizer and causal LM of a candidate (no adapter). Hub ids fail fast offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(spec, str):
        spec = ModelSpec(name=spec)
    if is_builtin(spec.name):
        path = str(builtin_path(spec.name, spec.seed))
    elif Path(spec.name).exists():
        path = spec.name
    else:
        path = spec.name
        if hub_offline() and not _in_hf_cache(spec.name):
            raise RuntimeError(
                f"model {spec.name!r} is a hub id, HF_HUB_OFFLINE=1 and it is not in the local "
                f"cache: download it on a connected machine (huggingface-cli download {spec.name}) "
                f"or pass a local folder as the model name")
    kwargs = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    tokenizer.padding_side = "left"  # batched greedy generation needs left padding
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(spec.dtype), **kwargs)
    if device:
        model.to(device)
    model.eval()
    info = {"model_type": model.config.model_type,
            "parameters": sum(p.numel() for p in model.parameters())}
    return Loaded(model=model, tokenizer=tokenizer, spec=spec, path=path, revision=spec.revision, info=info)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return False


def format_prompt(tokenizer, prompt: str) -> str:
    """The contract prompt, wrapped in the tokenizer's chat template when it has one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    return prompt


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a formatted prompt, for training and decoding alike. A chat template already
    spells out its special tokens as text, so they are added (e.g. a BOS) only without one."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    return list(tokenizer(text, add_special_tokens=not chat)["input_ids"])


def prompt_ids(tokenizer, record) -> list[int]:
    """The prompt of a contract `Record` as token ids (chat template when the tokenizer has one)."""
    from emoloom.contract import render_prompt

    return encode_prompt(tokenizer, format_prompt(tokenizer, render_prompt(record)))


def lora_targets(model_type: str) -> list[str] | str:
    return LORA_TARGETS.get(model_type, "all-linear")
