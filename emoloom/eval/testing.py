"""Small helpers shared by the eval tests and the speed bench (cached per process).

`trained_model_dir()` gives a tiny-qwen2 taught the contract's shape by a few seconds of full
fine-tuning (`smoke_sft`), so tests see outputs that close their JSON and accept skeleton drafts;
`mixed_records()` gives prompts of mixed lengths (context turns, an empty text, a long text).
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

from emoloom.contract import VAD, Record


@contextlib.contextmanager
def torch_threads(n: int):
    """Temporarily set torch's intra-op threads (on a busy 2-core machine, 2 spinning OpenMP
    threads per process can be many times slower than 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.cache
def trained_model_dir(steps: int = 200, seed: int = 0) -> Path:
    """A tiny-qwen2 fine-tuned (all weights) on synthetic GoEmotions answers, saved once."""
    from emoloom.data.synthetic import synthetic_records
    from emoloom.models import cache_dir, load_base

    from .smoke_sft import smoke_sft

    out = cache_dir() / "eval-tests" / f"tiny-qwen2-sft{steps}-s{seed}"
    if (out / "config.json").exists():
        return out
    loaded = load_base("tiny-qwen2")
    with torch_threads(1):
        model = smoke_sft(loaded.model, loaded.tokenizer, synthetic_records("goemotions", 300, seed=11),
                          steps=steps, lr=3e-3, lora=False, seed=seed)
    model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    return out


@functools.cache
def loaded(name: str):
    from emoloom.models import load_base

    return load_base(str(name))


def mixed_records(n: int = 8, seed: int = 5, taxonomy: str = "goemotions") -> list[Record]:
    """`n` synthetic records of mixed prompt lengths: context turns, an empty text, a long text."""
    from emoloom.data.synthetic import synthetic_records

    recs = synthetic_records(taxonomy, n, seed=seed, split="dev")
    out = []
    for i, r in enumerate(recs):
        if i == 1:
            r = r.model_copy(update={"text": ""})
        elif i == 2:
            r = r.model_copy(update={"context": ["hi , how are you ?", "fine , and you ?"]})
        elif i == 3:
            r = r.model_copy(update={"text": " ".join([r.text] * 12)})
        elif i == 4:
            r = r.model_copy(update={"vad": VAD(v=0.8, a=0.5, d=0.6), "vad_source": "gold"})
        out.append(r)
    return out


def faulty_pool(model: str, faults_dir: str | Path, **kwargs):
    """An `EvalPool` whose actors fail on purpose, for the pool tests. `set_faults(dir, spec)`
    decides: {"raise": {shard: n}, "exit": {shard: n}} makes the first n tries of a shard raise /
    kill its actor's process. Tries are counted in files, so they survive an actor's restart."""
    from .pool import EvalPool, _EvalActor

    class FaultyActor(_EvalActor):
        def run(self, shard, records, max_new_tokens=None):
            import json
            import os
            import uuid

            root = Path(faults_dir)
            spec = json.loads((root / "faults.json").read_text()) if (root / "faults.json").exists() else {}
            tries = len(list(root.glob(f"try-{shard}-*")))
            (root / f"try-{shard}-{uuid.uuid4().hex}").touch()
            if tries < spec.get("raise", {}).get(str(shard), 0):
                raise RuntimeError(f"injected failure in shard {shard} (try {tries})")
            if tries < spec.get("exit", {}).get(str(shard), 0):
                os._exit(1)
            return super().run(shard, records, max_new_tokens)

    class FaultyPool(EvalPool):
        actor_body = FaultyActor

    return FaultyPool(model, **kwargs)


def set_faults(faults_dir: str | Path, spec: dict) -> None:
    """Start counting tries afresh under `spec` (see `faulty_pool`)."""
    import json

    root = Path(faults_dir)
    root.mkdir(parents=True, exist_ok=True)
    for f in root.glob("try-*"):
        f.unlink()
    (root / "faults.json").write_text(json.dumps({k: {str(s): n for s, n in v.items()} for k, v in spec.items()}))
