"""A candidate to evaluate: base model + optional LoRA adapter, loaded and identified.

Both the in-process path (`run`) and the Ray actors (`pool`) load candidates from here.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from emoloom.models import ModelSpec

__all__ = ["adapter_checksum", "load_candidate", "model_identity"]


def adapter_checksum(adapter_dir: str | Path) -> str:
    """sha256 over an adapter folder: every file's relative path and content, in sorted order."""
    root = Path(adapter_dir)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def load_candidate(model_spec: ModelSpec | str, adapter_dir: str | Path | None = None, device: str | None = None,
                   merge: bool = True):
    """`models.load_base` plus a peft LoRA adapter (merged into the weights unless merge=False).
    `info["adapter"]` records the adapter's path and checksum."""
    from emoloom.models import load_base

    loaded = load_base(model_spec, device=device)
    if adapter_dir is not None:
        if not Path(adapter_dir).is_dir():
            raise FileNotFoundError(f"adapter folder {adapter_dir} does not exist")
        from peft import PeftModel

        model = PeftModel.from_pretrained(loaded.model, str(adapter_dir))
        loaded.model = (model.merge_and_unload() if merge else model).eval()
        loaded.info["adapter"] = {"path": str(adapter_dir), "sha256": adapter_checksum(adapter_dir)}
    return loaded


def model_identity(spec: ModelSpec) -> dict:
    """What was evaluated: the name, its revision (a built-in's recipe digest, a GGUF's sha256, a
    hub revision), the folder loaded when local, and the dtype `auto` resolved to here."""
    from emoloom.models import dtype_name, model_path

    path, revision, hub = model_path(spec)
    ident: dict[str, Any] = {"id": spec.name, "revision": revision, "seed": spec.seed,
                             "dtype": dtype_name(spec)}
    if not hub:
        ident["path"] = str(Path(path).resolve())
    return ident
