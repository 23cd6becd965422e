"""The evaluation sample of a screen: n dev rows, stratified by label, seeded, with a manifest.

    dev, files = load_full_dev(train_cfg)               # every dev row, as training reads it
    sample = evaluation_sample(dev, n=200, seed=0)       # what every trial is scored on
    manifest = sample_manifest(sample)                    # ids, sha256, per-label rows
    for line in label_coverage_warnings(manifest["label_counts"]):
        print(line)

Screening on a sample keeps KV-off decoding affordable; stratifying keeps every label of the
Macro-F1 objective in it, and the manifest lets anyone check that two trials (and the floors)
were scored on exactly the same rows.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

from emoloom.contract import Record
from emoloom.labels import TAXONOMIES

__all__ = ["EvaluationSets", "cross_corpus_records", "evaluation_sample", "evaluation_sets",
           "label_coverage_warnings", "load_full_dev", "sample_manifest"]


def load_full_dev(train_cfg) -> tuple[list[Record], dict[str, str]]:
    """(every labelled dev record of the training config's sources, {file: sha256}).

    Read as `train.examples.prepare_data` reads its dev records (same split reader, synthetic
    corpora from the same cache, lexicon-weak VAD with the config's lexicon and label weight) but
    without its `data.dev_size` subsample: prepare_data's dev set is a subset of this list."""
    from emoloom.lexicon import load_lexicon, with_weak_vad
    # The one split reader of training (style: one definition of each rule).
    from emoloom.train.examples import load_split

    lexicon = load_lexicon(train_cfg.data.lexicon)
    files: dict[str, str] = {}
    out: list[Record] = []
    for src in train_cfg.data.sources:
        if not src.dev_split:
            continue
        records = load_split(src, src.dev_split, train_cfg, files)
        out += [with_weak_vad(r, lexicon, label_weight=train_cfg.data.label_weight) for r in records if r.labels]
    _check_unique(out)
    return out, files


def _check_unique(records: Sequence[Record]) -> None:
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise ValueError(f"record id {r.id!r} occurs more than once: an evaluation sample needs unique ids")
        seen.add(r.id)


def _even_shares(sizes: list[int], n: int) -> list[int]:
    """n split as evenly as possible over groups of the given sizes (a small group's unused share
    goes to the others), like prepare_data's dev set spreads over sources."""
    shares = [0] * len(sizes)
    left = n
    open_ = [i for i, s in enumerate(sizes) if s > 0]
    while left > 0 and open_:
        each, extra = divmod(left, len(open_))
        for j, i in enumerate(open_):
            shares[i] += min(each + (j < extra), sizes[i] - shares[i])
        left = n - sum(shares)
        open_ = [i for i in open_ if shares[i] < sizes[i]]
    return shares


def _allocate(sizes: dict[str, int], k: int) -> dict[str, int]:
    """k rows over strata in proportion to their sizes (largest remainder), at least one per
    stratum when k allows; with k below the number of strata the largest quotas win."""
    total = sum(sizes.values())
    quota = {s: k * size / total for s, size in sizes.items()}
    floor_one = k >= len(sizes)
    alloc = {s: min(sizes[s], max(1 if floor_one else 0, math.floor(q))) for s, q in quota.items()}
    # Trim over-allocation (the minimum of one) from the strata most above their quota ...
    while sum(alloc.values()) > k:
        s = max((s for s in alloc if alloc[s] > 1), key=lambda s: (alloc[s] - quota[s], s))
        alloc[s] -= 1
    # ... and fill the rest by largest remainder.
    while sum(alloc.values()) < k:
        s = max((s for s in alloc if alloc[s] < sizes[s]), key=lambda s: (quota[s] - alloc[s], s))
        alloc[s] += 1
    return alloc


def _draw_source(rows: list[Record], k: int, rng: random.Random) -> list[Record]:
    """k rows of one source, stratified by label."""
    freq = Counter(l for r in rows for l in r.labels)
    # Multi-label rows are stratified on their rarest label: Macro-F1 weighs every label equally,
    # so a row matters most where its label is scarce; cheaper and more predictable than
    # iterative stratification (Sechidis et al. 2011), and the repair pass below gives the
    # coverage guarantee neither has on its own.
    strata: dict[str, list[Record]] = defaultdict(list)
    for r in rows:
        strata[_stratum(r, freq)].append(r)
    alloc = _allocate({s: len(v) for s, v in strata.items()}, k)
    chosen: list[Record] = []
    for s in sorted(strata):  # sorted ids and strata: the draw does not depend on input order
        chosen += rng.sample(sorted(strata[s], key=lambda r: r.id), alloc[s])
    # Repair: a label whose rows all sit in other labels' strata may be missed; swap one row in
    # for a row whose labels all stay represented without it.
    have = Counter(l for r in chosen for l in r.labels)
    picked = {r.id for r in chosen}
    for label in sorted((l for l in freq if not have[l]), key=lambda l: (freq[l], l)):
        if have[label]:
            continue
        droppable = [i for i, r in enumerate(chosen) if all(have[l] > 1 for l in r.labels)]
        if not droppable:
            break
        out = chosen.pop(max(droppable, key=lambda i: (len(strata[_stratum(chosen[i], freq)]), -i)))
        add = rng.choice(sorted((r for r in rows if label in r.labels and r.id not in picked), key=lambda r: r.id))
        chosen.append(add)
        picked.discard(out.id)
        picked.add(add.id)
        have.subtract(out.labels)
        have.update(add.labels)
    return chosen


def _stratum(r: Record, freq: Counter) -> str:
    return min(r.labels, key=lambda l: (freq[l], l)) if r.labels else ""


def evaluation_sample(records: Sequence[Record], n: int, seed: int) -> list[Record]:
    """n of `records` (the full dev split(s)), stratified by label; all of them when n >= len.

    * Sources ((corpus, taxonomy) of the records) get even shares, as in prepare_data's dev set.
    * Within a source, rows are stratified on their rarest label and strata get rows in proportion
      to their size, at least one each when n allows; a repair pass then guarantees that every
      label with rows is represented whenever the source's share is at least its label count.
    * Seeded and deterministic: the same records and seed give the same rows, returned in the
      order of `records`; the choice does not depend on that order.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    records = list(records)
    _check_unique(records)
    if n >= len(records):
        return records
    by_source: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        by_source[(r.corpus, r.taxonomy)].append(r)
    keys = sorted(by_source)
    shares = _even_shares([len(by_source[k]) for k in keys], n)
    rng = random.Random(f"emoloom-eval-sample/{seed}")
    picked: set[str] = set()
    for key, k in zip(keys, shares):
        picked.update(r.id for r in _draw_source(by_source[key], k, rng))
    return [r for r in records if r.id in picked]


def sample_manifest(sample: Sequence[Record]) -> dict:
    """What identifies an evaluation sample and what it holds::

        n, ids,
        ids_sha256   sha256 of the ids (one per line, in order)
        sha256       sha256 of [id, text, context, taxonomy, labels] of every row, in order:
                     equal manifests mean the same rows with the same text and gold labels
        label_counts {taxonomy: {label: rows}} over every label of each taxonomy (0 included)
        sources      {"corpus/taxonomy": rows}
    """
    sample = list(sample)
    ids = [r.id for r in sample]
    content = json.dumps([[r.id, r.text, r.context, r.taxonomy, r.labels] for r in sample], ensure_ascii=False)
    counts: dict[str, dict[str, int]] = {}
    for tax in sorted({r.taxonomy for r in sample}):
        c = Counter(l for r in sample if r.taxonomy == tax for l in r.labels)
        counts[tax] = {l: c[l] for l in TAXONOMIES[tax]}
    return {
        "n": len(sample),
        "ids": ids,
        "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "sha256": hashlib.sha256(content.encode()).hexdigest(),
        "label_counts": counts,
        "sources": dict(sorted(Counter(f"{r.corpus}/{r.taxonomy}" for r in sample).items())),
    }


def label_coverage_warnings(counts: Mapping[str, Mapping[str, int]], min_rows: int = 3) -> list[str]:
    """One line per label with fewer than `min_rows` rows in the sample (`sample_manifest`'s
    label_counts): with 0 it is left out of Macro-F1, with a few its F1 moves in big steps."""
    out = []
    for tax, per_label in counts.items():
        for label, rows in per_label.items():
            if rows == 0:
                out.append(f"{tax}/{label}: no rows in the evaluation sample; left out of Macro-F1")
            elif rows < min_rows:
                out.append(f"{tax}/{label}: only {rows} row{'s' if rows > 1 else ''} in the evaluation sample "
                           f"(< {min_rows}); its F1, and so Macro-F1, moves in big steps")
    return out


@dataclass
class EvaluationSets:
    """What every trial of a screen is scored on, drawn once by the screen's driver."""

    dev: list[Record]  # the evaluation sample
    epoch: list[Record]  # the rows decoded after every epoch (a stratified part of `dev`)
    cross: dict[str, list[Record]]  # cross-corpus sets, Ekman-projected
    files: dict[str, str]  # {file: sha256} of everything read
    manifest: dict  # sample_manifest(dev)

    def to_json(self) -> dict:
        dump = lambda rs: [r.model_dump(mode="json") for r in rs]  # noqa: E731
        return {"dev": dump(self.dev), "epoch_ids": [r.id for r in self.epoch],
                "cross": {k: dump(v) for k, v in self.cross.items()}, "files": self.files,
                "manifest": self.manifest}

    @classmethod
    def from_json(cls, data: dict) -> "EvaluationSets":
        dev = [Record.model_validate(r) for r in data["dev"]]
        epoch_ids = set(data["epoch_ids"])
        return cls(dev=dev, epoch=[r for r in dev if r.id in epoch_ids],
                   cross={k: [Record.model_validate(r) for r in v] for k, v in data["cross"].items()},
                   files=data["files"], manifest=data["manifest"])


def cross_corpus_records(sources: Sequence[Mapping], train_taxonomy: str,
                         files: dict[str, str]) -> dict[str, list[Record]]:
    """Cross-corpus records ({"corpus/taxonomy/split": records}) projected onto Ekman-7.

    When the training taxonomy contains the Ekman names (GoEmotions does), they are asked with
    the training taxonomy's prompt, so the model answers in the label set it learned and the
    Ekman-projected F1 compares like with like."""
    from emoloom.data import load_corpus
    from emoloom.data.base import project
    from emoloom.labels import EKMAN

    cross: dict[str, list[Record]] = {}
    for src in sources:
        data = load_corpus(src["corpus"], src.get("source"), src["split"], taxonomy=src.get("taxonomy"),
                           limit=src.get("limit"))
        records = project(data.with_weak_vad(), "ekman")
        if set(EKMAN) <= set(TAXONOMIES[train_taxonomy]):
            records = [r.model_copy(update={"taxonomy": train_taxonomy}) for r in records]
        files.update(data.files)
        cross["/".join(x for x in (src["corpus"], src.get("taxonomy"), src["split"]) if x)] = records
    return cross


def evaluation_sets(train_cfg, eval_options: Mapping, seed: int) -> EvaluationSets:
    """The screen's evaluation sets from its base training config (the screen's `train:` plus
    the space's fixed values) and its `eval:` options: `dev_limit` rows drawn from the full dev
    split(s), `epoch_limit` of those for the per-epoch rung value, and the cross-corpus sets."""
    dev, files = load_full_dev(train_cfg)
    if not dev:
        raise ValueError("the screen's training sources have no labelled dev rows (set a dev_split)")
    sample = evaluation_sample(dev, eval_options["dev_limit"] or len(dev), seed)
    epoch = evaluation_sample(sample, eval_options["epoch_limit"], seed)
    # The first source's taxonomy (pool A's corpus) asks the cross-corpus questions.
    cross = cross_corpus_records(eval_options["cross_corpus"], dev[0].taxonomy, files)
    return EvaluationSets(dev=sample, epoch=epoch, cross=cross, files=files, manifest=sample_manifest(sample))
