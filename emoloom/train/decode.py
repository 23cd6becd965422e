"""Load a trained run folder (base + adapter + heads), for checks of a training run.

Decoding and scoring live in `emoloom.eval`."""
from __future__ import annotations

from pathlib import Path


def load_trained(out: str | Path):
    """(peft model in eval mode, tokenizer, heads) of a run folder written by `fit`."""
    import yaml
    from peft import PeftModel

    from emoloom.models import ModelSpec, load_base
    from emoloom.train.heads import load_heads

    out = Path(out)
    spec = ModelSpec.model_validate(yaml.safe_load((out / "config.yaml").read_text())["model"])
    loaded = load_base(spec)
    model = PeftModel.from_pretrained(loaded.model, str(out / "adapter"))
    model.eval()
    return model, loaded.tokenizer, load_heads(out / "heads.pt")
