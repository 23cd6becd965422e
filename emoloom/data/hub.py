"""Hugging Face Hub sources (`datasets.load_dataset`), imported lazily.

With HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1 a hub source fails at once, before `datasets`
is imported, with a message that says how to point at local files instead. Bad rows are
reported as ``hf://<id>[/<config>][<split>]:<row>`` (0-based row index).
"""
from __future__ import annotations

from . import dailydialog, empathetic, goemotions
from .base import HUB_ALIASES, HubOfflineError, Report, hub_offline, sha256_file

# corpus -> (default hub id, config, {our split name -> hub split name}, local-file hint)
HUB = {
    "goemotions": ("google-research-datasets/go_emotions", "simplified",
                   {"dev": "validation", "valid": "validation"}, goemotions.HINT),
    "empathetic": ("facebook/empathetic_dialogues", None,
                   {"dev": "validation", "valid": "validation"}, empathetic.HINT),
    "dailydialog": ("li2017dailydialog/daily_dialog", None,
                    {"dev": "validation", "valid": "validation"}, dailydialog.HINT),
}


def check_online(corpus: str, source: str) -> None:
    var = hub_offline()
    if var:
        hint = HUB[corpus][3] if corpus in HUB else "pass --source with a local file path"
        raise HubOfflineError(
            f"{source!r} is no local file or folder and looks like a Hugging Face Hub dataset id, "
            f"but {var}=1 switches the hub off, "
            f"so it cannot be downloaded. Use local files instead: {hint}"
        )


def read_hub(corpus: str, source: str, split: str | None, report: Report, limit: int | None = None,
             context_turns: int = dailydialog.DEFAULT_CONTEXT_TURNS, config: str | None = None):
    if corpus not in HUB:
        raise ValueError(f"corpus {corpus!r} cannot be read from the hub; pass a local --source path")
    check_online(corpus, source)  # before importing datasets: fail fast
    _, default_config, split_map, _ = HUB[corpus]
    split = split or "train"
    hub_id = HUB_ALIASES.get(source, source)
    if config is None and hub_id == HUB[corpus][0]:
        config = default_config

    import datasets  # heavy: imported only here

    ds = datasets.load_dataset(hub_id, config, split=split_map.get(split, split))
    for cache in getattr(ds, "cache_files", None) or []:
        name = cache.get("filename")
        if name:
            report.files[name] = sha256_file(name)
    where = f"hf://{hub_id}" + (f"/{config}" if config else "") + f"[{split}]"
    if corpus == "goemotions":
        return goemotions.from_hub_rows(ds, where, split, report, limit)
    if corpus == "empathetic":
        return empathetic.from_hub_rows(ds, where, split, report, limit)
    return dailydialog.from_hub_rows(ds, where, split, report, limit, context_turns=context_turns)
