"""The evaluation API the screen calls: `evaluate(cfg, records=None) -> dict`.

    from emoloom.eval.run import EvalConfig, evaluate
    result = evaluate(EvalConfig(model={"name": "tiny-qwen2"}, adapter="runs/x/adapter",
                                 corpus="goemotions", source="/data/goemotions", split="dev",
                                 out="runs/x/eval"))
    result["metrics"]["all"]["ok_only"]["labels"]["macro_f1"]

With `out` set, two files are written there:

* ``predictions.jsonl`` - one row per record, in input order (fields: `emoloom.eval.predict`);
* ``metrics.json``      - the returned dict: metrics (`emoloom.eval.metrics`), config and its hash,
  model id/path/revision, adapter sha256, data sha256 per input file and skipped rows, package
  versions, seed, decoder, forward passes per example, near ties (greedy choices within the
  dtype's resolution), the checkpoint's generation settings greedy decoding ignored, wall time.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Literal, Sequence

from pydantic import Field

from emoloom.config import StrictModel, config_hash
from emoloom.contract import Record
from emoloom.models import ModelSpec
from emoloom.versions import package_versions

from .candidate import adapter_checksum, load_candidate, model_identity
from .decoding import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, DecoderName
from .predict import failed_row, plan_shards

class EvalConfig(StrictModel):
    """One evaluation: a candidate (base model + optional LoRA adapter) on one corpus split."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    adapter: str | None = None  # folder written by peft save_pretrained
    corpus: str = "synthetic"
    source: str | None = None
    split: str | None = None
    taxonomy: str | None = None  # passed to load_corpus (e.g. "ekman" to project)
    # VAD targets of a corpus loaded here: "weak" fills records without gold VAD with the
    # lexicon-weak target (LoadResult.with_weak_vad); "gold" keeps gold VAD only. Given records
    # are used as they are.
    vad_targets: Literal["gold", "weak"] = "weak"
    decoder: DecoderName = "fast"
    actors: int = Field(0, ge=0)  # 0: in-process, no Ray
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1)
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1)
    limit: int | None = Field(None, ge=0)
    out: str | None = None
    seed: int = 0
    shard_size: int = Field(32, ge=1)  # rows per actor task (and per in-process chunk)
    bootstrap: int = Field(1000, ge=0)
    device: str | None = None  # in-process device; actors use CUDA when given GPUs
    gpus_per_actor: float | None = None  # None: 1/actors of a GPU when the cluster has GPUs
    merge_adapter: bool = True  # merge LoRA into the base weights (faster decoding)
    progress: bool = False  # tqdm bar on stderr


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def _progress(total: int, enabled: bool):
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="evaluate", unit="ex", file=sys.stderr,
               mininterval=0.2 if sys.stderr.isatty() else 10.0)
    return bar.update, bar.close


class InProcessRunner:
    """The in-process path behind the pool's interface (`run(records, shard_size, progress)`),
    shard by shard (the same shards as the pool, so both batch the same rows together). A shard
    that raises is retried once, then its rows are reported as failed."""

    def __init__(self, cfg: EvalConfig, candidate=None) -> None:
        from .predict import Predictor

        if candidate is None:
            candidate = load_candidate(cfg.model, cfg.adapter, device=cfg.device, merge=cfg.merge_adapter)
        self.predictor = Predictor(candidate, cfg.decoder, cfg.max_new_tokens, cfg.batch_size)

    def ignored_settings(self) -> dict:
        return self.predictor.decoder.ignored_settings

    def run(self, records: Sequence[Record], shard_size: int = 32,
            progress: Callable[[int], None] | None = None) -> list[dict]:
        self.predictor.decoder.check([r.taxonomy for r in records])  # a config error is not a shard failure
        rows: list[dict | None] = [None] * len(records)
        for shard in plan_shards(records, shard_size):
            batch = [records[i] for i in shard]
            error = None
            for _attempt in range(2):
                try:
                    out = self.predictor.predict(batch, progress=None)
                    break
                except Exception as exc:  # noqa: BLE001 - reported per row below
                    error = f"{type(exc).__name__}: {exc}"
            else:
                out = [failed_row(r, error or "") for r in batch]
            for i, row in zip(shard, out):
                rows[i] = row
            if progress:
                progress(len(shard))
        return rows  # type: ignore[return-value]

    def close(self) -> None:
        pass

    def __enter__(self) -> "InProcessRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_runner(cfg: EvalConfig, records: Sequence[Record] = (), candidate=None):
    """What `evaluate` runs on: an `EvalPool` of cfg.actors actors, or the in-process runner.
    Both have `run(records, shard_size, progress)`, `ignored_settings()` and `close()`."""
    if cfg.actors > 0:
        from .pool import EvalPool

        _check_budget_driver(cfg, records)
        return EvalPool(cfg.model, cfg.adapter, decoder=cfg.decoder, max_new_tokens=cfg.max_new_tokens,
                        batch_size=cfg.batch_size, actors=cfg.actors, gpus_per_actor=cfg.gpus_per_actor,
                        merge_adapter=cfg.merge_adapter)
    return InProcessRunner(cfg, candidate)


def predict_in_process(cfg: EvalConfig, records: Sequence[Record], candidate=None,
                       progress: Callable[[int], None] | None = None) -> list[dict]:
    """Prediction rows in input order without Ray (`InProcessRunner`)."""
    return InProcessRunner(cfg, candidate).run(records, cfg.shard_size, progress)


def evaluate(cfg: EvalConfig, records: Sequence[Record] | None = None, *, data=None, candidate=None,
             pool=None, log: Callable[[str], None] | None = None) -> dict:
    """Evaluate one candidate; returns the metrics.json dict (and writes the files when cfg.out).

    records:   the records to evaluate (default: `load_corpus(cfg.corpus, cfg.source, cfg.split,
               taxonomy=cfg.taxonomy, limit=cfg.limit)`); `cfg.limit` applies to given ones too
    data:      a `LoadResult` the records came from (its file checksums and skipped rows are
               recorded); filled in when the corpus is loaded here
    candidate: an already loaded `Loaded` (in-process only, actors=0) to skip loading
    pool:      an `EvalPool` of this candidate to run on (kept open; cfg.actors is then ignored),
               e.g. to evaluate several splits without reloading the model in the actors
    """
    from .metrics import compute_metrics

    log = log or (lambda msg: print(msg, file=sys.stderr))
    started = time.time()
    if records is None:
        from emoloom.data import load_corpus

        data = load_corpus(cfg.corpus, cfg.source, cfg.split, taxonomy=cfg.taxonomy, limit=cfg.limit)
        records = data.with_weak_vad() if cfg.vad_targets == "weak" else data.records
        if data.skipped:
            log(f"skipped {len(data.skipped)} input rows:")
            for line in data.skipped[:20]:
                log(f"  {line}")
            if len(data.skipped) > 20:
                log(f"  ... and {len(data.skipped) - 20} more (all listed in metrics.json)")
    elif cfg.limit is not None:
        records = list(records)[:cfg.limit]
    records = list(records)
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"record ids must be unique; {dup!r} occurs more than once")

    update, close = _progress(len(records), cfg.progress)
    runner = pool if pool is not None else open_runner(cfg, records, candidate)
    try:
        ignored = runner.ignored_settings()
        if ignored:
            log("evaluate: greedy decoding ignores the checkpoint's generation settings "
                + json.dumps(ignored, sort_keys=True))
        rows = runner.run(records, shard_size=cfg.shard_size, progress=update)
    finally:
        close()
        if runner is not pool:
            runner.close()
    wall = time.time() - started

    failed = [r for r in rows if r.get("error") == "actor_failed"]
    if failed and len(failed) == len(rows):
        log(f"evaluate: every row failed; first failure: {failed[0].get('detail')}")
    adapter = None
    if cfg.adapter:
        adapter = {"path": str(cfg.adapter), "sha256": adapter_checksum(cfg.adapter)}
    forwards = [r["forwards"] for r in rows]
    result = {
        "metrics": compute_metrics(rows, bootstrap=cfg.bootstrap, seed=cfg.seed),
        "config": cfg.model_dump(mode="json"),
        "config_hash": config_hash(cfg, exclude={"out", "progress"}),
        "model": model_identity(cfg.model),
        "adapter": adapter,
        "data": {
            "corpus": cfg.corpus, "source": cfg.source, "split": cfg.split,
            "records": len(records),
            "sha256": dict(data.files) if data is not None else {},
            "vad_sources": dict(Counter(r.vad_source for r in records)),
            "skipped": list(data.skipped) if data is not None else [],
        },
        "versions": package_versions(),  # emoloom.versions
        "seed": cfg.seed,
        "decoder": cfg.decoder,
        "max_new_tokens": cfg.max_new_tokens,
        "forwards_per_example": round(sum(forwards) / len(forwards), 3) if forwards else None,
        "new_tokens_per_example": round(sum(r["new_tokens"] for r in rows) / len(rows), 3) if rows else None,
        "truncated": sum(bool(r.get("truncated")) for r in rows),
        # greedy choices whose top-2 logit gap was within the model dtype's resolution
        "near_ties": sum(r.get("near_ties") or 0 for r in rows),
        "ignored_generation_settings": ignored,
        "failed_rows": len(failed),
        "wall_time_s": round(wall, 3),
        "examples_per_s": round(len(rows) / wall, 3) if wall > 0 else None,
    }
    if cfg.out:
        write_outputs(cfg.out, rows, result)
    return result


def _check_budget_driver(cfg: EvalConfig, records: Sequence[Record]) -> None:
    """Fail before starting actors when constrained/score cannot fit the budget (loads only the
    tokenizer); otherwise every shard would fail twice on the actors."""
    if cfg.decoder not in ("constrained", "score"):
        return
    from transformers import AutoTokenizer

    from emoloom.models import model_path

    from .decoding import check_budget

    spec = cfg.model
    path, revision, hub = model_path(spec)
    tok = AutoTokenizer.from_pretrained(path, revision=revision if hub else None, trust_remote_code=spec.trust_remote_code)
    check_budget(tok, [r.taxonomy for r in records], cfg.decoder, cfg.max_new_tokens)


def write_outputs(out: str | Path, rows: Sequence[dict], result: dict) -> None:
    """predictions.jsonl and metrics.json, each written to a temp name and renamed into place."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".predictions.jsonl.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
    tmp.replace(out / "predictions.jsonl")
    tmp = out / f".metrics.json.{os.getpid()}"
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out / "metrics.json")
