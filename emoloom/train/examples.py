"""Training data of one run: records -> pools A/B + dev, then token-level examples and batches.

`prepare_data(cfg)` (no tokenizer, cached on disk per data config) reads every configured source,
fills lexicon-weak VAD targets, adds Valence Flip copies to pool B, writes the rationale of every
record (`lexicon.rationale_for`), fits the external appraisal classifier on pool A and scores
every training record with it, and keeps TextBlob's polarity for the polarity term.

`encode(...)` turns a record into token ids under the contract (prompt tokens + target tokens +
eos; the rationale's token span is located through the tokenizer's character offsets), and
`collate(...)` right-pads a list of examples into one batch of tensors.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoloom.contract import Record, render_target
from emoloom.models import prompt_ids

log = logging.getLogger(__name__)

PREP_VERSION = 2  # bump when prepare_data's output changes for the same config


@dataclass
class Prepared:
    pool_a: list[Record]
    pool_b: list[Record]
    dev: list[Record]
    rationale: dict[str, str]  # record id -> rationale of its target line
    appraisal: dict[str, list[float]]  # training record id -> classifier scores (appraisal.DIMENSIONS)
    polarity: dict[str, float]  # training record id -> TextBlob polarity
    taxonomies: list[str]  # taxonomies present in training data (one emotion head each)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "pool_a": [r.model_dump(mode="json") for r in self.pool_a],
            "pool_b": [r.model_dump(mode="json") for r in self.pool_b],
            "dev": [r.model_dump(mode="json") for r in self.dev],
            "rationale": self.rationale, "appraisal": self.appraisal, "polarity": self.polarity,
            "taxonomies": self.taxonomies, "stats": self.stats,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Prepared":
        recs = lambda key: [Record.model_validate(r) for r in data[key]]  # noqa: E731
        return cls(pool_a=recs("pool_a"), pool_b=recs("pool_b"), dev=recs("dev"), rationale=data["rationale"],
                   appraisal=data["appraisal"], polarity=data["polarity"], taxonomies=data["taxonomies"],
                   stats=data["stats"])


def _atomic_dir(out: Path, build) -> Path:
    """Build a folder under a private name, then rename (concurrent Ray workers never see half)."""
    if out.exists():
        return out
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process won the race: its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def synthetic_root(seed: int, size: int) -> Path:
    """The synthetic corpora (all three taxonomies) for (seed, size), written once into the cache."""
    from emoloom.data import write_synthetic
    from emoloom.models import cache_dir

    return _atomic_dir(cache_dir() / "synthetic" / f"seed{seed}-n{size}",
                       lambda tmp: write_synthetic(tmp, seed=seed, size=size))


def _fingerprint(source: str | None) -> list:
    """(name, size, mtime) of a local source's files, so an edited file invalidates the cache."""
    if not source or not os.path.exists(source):
        return []  # generated (synthetic) or a hub id: fixed by the config itself
    root = Path(source)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def _data_key(cfg) -> str:
    from emoloom.lexicon import load_lexicon

    lexicon = load_lexicon(cfg.data.lexicon)
    blob = json.dumps({"data": cfg.data.model_dump(mode="json"), "augment": cfg.augment.model_dump(mode="json"),
                       "seed": cfg.seed, "lexicon": lexicon.sha256, "v": PREP_VERSION,
                       "files": [_fingerprint(s.source) for s in cfg.data.sources]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_data(cfg, *, use_cache: bool = True) -> Prepared:
    """Pools, dev set and per-record extras of a run (see the module docstring); cached on disk."""
    from emoloom.models import cache_dir

    path = cache_dir() / "train-data" / f"{_data_key(cfg)}.json"
    if use_cache and path.exists():
        return Prepared.from_json(json.loads(path.read_text()))
    prepared = _prepare(cfg)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(prepared.to_json()))
        tmp.replace(path)
    return prepared


def load_split(src, split: str, cfg, files: dict[str, str]) -> list[Record]:
    """Records of one split; the sha256 of every file read is added to `files`."""
    from emoloom.data import load_corpus

    source = src.source
    if src.corpus == "synthetic" and source is None:
        source = synthetic_root(cfg.data.synthetic_seed, cfg.data.synthetic_size)
    res = load_corpus(src.corpus, source, split, taxonomy=src.taxonomy, limit=src.limit)
    if res.skipped:
        log.warning("%s %s/%s: %d bad rows skipped (first: %s)", src.corpus, source, split, len(res.skipped),
                    res.skipped[0])
    files.update(res.files)
    return res.records


def _prepare(cfg) -> Prepared:
    from emoloom.augment import valence_flip
    from emoloom.lexicon import load_lexicon, rationale_for, with_weak_vad
    from emoloom.train.appraisal import AppraisalClassifier, sentiment

    lexicon = load_lexicon(cfg.data.lexicon)
    weak = lambda recs: [with_weak_vad(r, lexicon, label_weight=cfg.data.label_weight) for r in recs]  # noqa: E731
    pools: dict[str, list[Record]] = {"A": [], "B": []}
    dev_by_source: list[list[Record]] = []
    unlabelled = 0
    files: dict[str, str] = {}
    for src in cfg.data.sources:
        records = load_split(src, src.split, cfg, files)
        labelled = [r for r in records if r.labels]
        unlabelled += len(records) - len(labelled)  # no target line without labels
        pools[src.pool] += weak(labelled)
        if src.dev_split and cfg.data.dev_size:
            dev_by_source.append(weak([r for r in load_split(src, src.dev_split, cfg, files) if r.labels]))
    _dedupe_ids(pools["A"] + pools["B"])

    flips: list[Record] = []
    if cfg.augment.valence_flip and cfg.augment.flip_rate > 0:
        flips = valence_flip(pools["A"], lexicon, cfg.augment.flip_rate, seed=cfg.seed, mode=cfg.augment.flip_mode)
        pools["B"] += flips

    dev = _pick_dev(dev_by_source, cfg.data.dev_size, cfg.seed)
    train = pools["A"] + pools["B"]
    rationale = {r.id: rationale_for(r.text, r.labels, lexicon) for r in train + dev}
    polarity = {r.id: sentiment(r.text)[0] for r in train}
    appraisal: dict[str, list[float]] = {}
    if pools["A"]:  # always: the cache key does not depend on the loss weights
        clf = AppraisalClassifier(lexicon).fit([r.text for r in pools["A"]], [r.labels for r in pools["A"]])
        scores = clf.predict([r.text for r in train])
        appraisal = {r.id: [round(float(x), 4) for x in row] for r, row in zip(train, scores)}
    taxonomies = sorted({r.taxonomy for r in train})
    stats = {"pool_a": len(pools["A"]), "pool_b": len(pools["B"]), "flips": len(flips), "dev": len(dev),
             "unlabelled_skipped": unlabelled, "taxonomies": taxonomies, "lexicon": lexicon.name,
             "lexicon_sha256": lexicon.sha256, "sha256": files}
    return Prepared(pools["A"], pools["B"], dev, rationale, polarity=polarity, appraisal=appraisal,
                    taxonomies=taxonomies, stats=stats)


def _dedupe_ids(records: list[Record]) -> None:
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise ValueError(f"record id {r.id!r} occurs twice in the training data; ids key the "
                             "per-record targets (use distinct sources or splits)")
        seen.add(r.id)


def _pick_dev(groups: list[list[Record]], size: int, seed: int) -> list[Record]:
    """About `size` dev records, spread evenly over the sources (seeded choice within each)."""
    groups = [g for g in groups if g]
    if not groups or size <= 0:
        return []
    rng = random.Random(f"emoloom-dev/{seed}")
    share = math.ceil(size / len(groups))
    out: list[Record] = []
    for g in groups:
        out += g if len(g) <= share else rng.sample(g, share)
    return out[:size]


# -----------------------------------------------------------------------------------------------
# Token-level examples
# -----------------------------------------------------------------------------------------------


@dataclass
class Example:
    input_ids: list[int]
    prompt_len: int
    rationale: tuple[int, int]  # [start, end) positions of the rationale tokens in input_ids
    taxonomy: int  # index into the run's taxonomy list
    labels: list[int]  # label indices in the taxonomy
    vad: tuple[float, float, float] | None
    appraisal: list[float] | None
    polarity: float
    key: str  # sampling class


def target_text(record: Record, rationale: str) -> str:
    return render_target(record.labels, record.vad or (0.5, 0.5, 0.5), rationale)


def encode(records: list[Record], tokenizer, prepared: Prepared, max_length: int) -> tuple[list[Example], int]:
    """(examples, number dropped for exceeding max_length)."""
    from emoloom.labels import taxonomy as labels_of
    from emoloom.sampling import class_key

    tax_index = {t: i for i, t in enumerate(prepared.taxonomies)}
    eos = tokenizer.eos_token_id
    out, dropped = [], 0
    for r in records:
        if r.taxonomy not in tax_index:
            raise ValueError(f"record {r.id!r} has taxonomy {r.taxonomy!r}, not among the trained "
                             f"taxonomies {prepared.taxonomies}")
        rationale = prepared.rationale[r.id]
        target = target_text(r, rationale)
        start = target.rindex('"rationale":"') + len('"rationale":"')
        end = len(target) - 2  # before the closing quote and brace
        p_ids = prompt_ids(tokenizer, r)
        enc = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
        t_ids = list(enc["input_ids"]) + [eos]
        inside = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if s < end and e > start]
        if len(p_ids) + len(t_ids) > max_length:
            dropped += 1
            continue
        span = (len(p_ids) + inside[0], len(p_ids) + inside[-1] + 1) if inside else (0, 0)
        names = labels_of(r.taxonomy)
        out.append(Example(
            input_ids=p_ids + t_ids, prompt_len=len(p_ids), rationale=span, taxonomy=tax_index[r.taxonomy],
            labels=[names.index(l) for l in r.labels], vad=r.vad.as_tuple() if r.vad else None,
            appraisal=prepared.appraisal.get(r.id), polarity=prepared.polarity.get(r.id, 0.0), key=class_key(r),
        ))
    return out, dropped


def collate(examples: list[Example], pad_id: int, n_labels_max: int):
    """Right-padded batch tensors (dict) for `EmoModel.forward`."""
    import torch

    b = len(examples)
    length = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    labels = torch.full((b, length), -100, dtype=torch.long)
    rationale = torch.zeros((b, length), dtype=torch.bool)  # positions whose logits predict a rationale token
    multi_hot = torch.zeros((b, n_labels_max))
    vad = torch.zeros((b, 3))
    has_vad = torch.zeros(b, dtype=torch.bool)
    appraisal = torch.zeros((b, 4))
    has_appraisal = torch.zeros(b, dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        attention[i, :n] = 1
        labels[i, e.prompt_len:n] = input_ids[i, e.prompt_len:n]
        s, t = e.rationale
        if t > s:
            rationale[i, s - 1:t - 1] = True
        multi_hot[i, e.labels] = 1.0
        if e.vad is not None:
            vad[i] = torch.tensor(e.vad)
            has_vad[i] = True
        if e.appraisal is not None:
            appraisal[i] = torch.tensor(e.appraisal)
            has_appraisal[i] = True
    return {
        "input_ids": input_ids, "attention_mask": attention, "labels": labels,
        "prompt_end": torch.tensor([e.prompt_len - 1 for e in examples]),
        "rationale_mask": rationale, "taxonomy": torch.tensor([e.taxonomy for e in examples]),
        "label_targets": multi_hot, "vad": vad, "has_vad": has_vad, "appraisal": appraisal,
        "has_appraisal": has_appraisal, "polarity": torch.tensor([e.polarity for e in examples]),
        "n_tokens": int(attention.sum()),
    }
