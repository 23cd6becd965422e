"""Records -> prediction rows with one loaded candidate; shared by the in-process path and the actors.

A prediction row is one line of predictions.jsonl::

    id, corpus, split, taxonomy, prompt_sha256, truncated, raw, parse_ok, labels, vad, rationale,
    error, detail, stop, new_tokens, forwards, near_ties, gold_labels, gold_vad, gold_vad_source
    [, flip_of] [, label_scores (score decoder)]
"""
from __future__ import annotations

from typing import Callable, Sequence

from emoloom.contract import Record, parse_output

from .decoding import DEFAULT_BATCH_SIZE

FAILED_ERROR = "actor_failed"


def gold_fields(record: Record) -> dict:
    out = {
        "gold_labels": list(record.labels),
        "gold_vad": record.vad.model_dump() if record.vad else None,
        "gold_vad_source": record.vad_source,
    }
    if "flip_of" in record.meta:
        out["flip_of"] = str(record.meta["flip_of"])
    return out


def failed_row(record: Record, detail: str) -> dict:
    """A row the evaluation could not produce: reported, never dropped."""
    return {
        "id": record.id, "corpus": record.corpus, "split": record.split, "taxonomy": record.taxonomy,
        "prompt_sha256": None, "truncated": None, "raw": None,
        "parse_ok": False, "labels": None, "vad": None, "rationale": None,
        "error": FAILED_ERROR, "detail": detail[:500], "stop": None, "new_tokens": 0, "forwards": 0, "near_ties": 0,
        **gold_fields(record),
    }


class Predictor:
    """A loaded candidate plus a `Decoder`; `predict(records)` returns prediction rows in order."""

    def __init__(self, candidate, decoder: str = "fast", max_new_tokens: int = 96, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.candidate = candidate
        self.mode, self.batch_size, self.max_new_tokens = decoder, batch_size, max_new_tokens
        self._decoders: dict[int, object] = {}
        self.decoder = self.decoder_for(max_new_tokens)

    def decoder_for(self, max_new_tokens: int):
        """One Decoder per token budget (its FSM checks depend on the budget)."""
        from .decoding import Decoder

        if max_new_tokens not in self._decoders:
            self._decoders[max_new_tokens] = Decoder(self.candidate.model, self.candidate.tokenizer, self.mode,
                                                     max_new_tokens=max_new_tokens, batch_size=self.batch_size)
        return self._decoders[max_new_tokens]

    def predict(self, records: Sequence[Record], progress: Callable[[int], None] | None = None,
                max_new_tokens: int | None = None) -> list[dict]:
        decoder = self.decoder_for(max_new_tokens or self.max_new_tokens)
        prompts = decoder.prepare(records)
        gens = decoder.generate(prompts, [r.taxonomy for r in records], progress=progress)
        rows = []
        for rec, prompt, gen in zip(records, prompts, gens):
            parsed = parse_output(gen.raw, rec.taxonomy)
            row = {
                "id": rec.id, "corpus": rec.corpus, "split": rec.split, "taxonomy": rec.taxonomy,
                "prompt_sha256": prompt.sha256, "truncated": prompt.truncated, "raw": gen.raw,
                **parsed.row(), "detail": parsed.detail, "stop": gen.stop,
                "new_tokens": len(gen.tokens), "forwards": gen.forwards, "near_ties": gen.near_ties,
                **gold_fields(rec),
            }
            if gen.label_scores is not None:
                row["label_scores"] = gen.label_scores
            rows.append(row)
        return rows


def plan_shards(records: Sequence[Record], shard_size: int) -> list[list[int]]:
    """Record indices in shards of similar prompt length (by characters of the text part).

    The plan depends only on the records and `shard_size`, never on how many actors run them, so
    every pool size batches the same rows together and writes the same predictions.
    """
    size = max(1, shard_size)
    order = sorted(range(len(records)),
                   key=lambda i: (len(records[i].text) + sum(len(c) for c in records[i].context), i))
    return [order[s:s + size] for s in range(0, len(order), size)]
