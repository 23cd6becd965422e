"""Evaluation: KV-off decoding, the Ray actor pool, the paper's metrics and auditable output.

Modules (heavy libraries are imported inside functions, so importing this package is cheap):

* `decoding` - prompt preparation (left truncation) and the four decoders (reference, fast,
              constrained, score), all KV-off (`use_cache=False` semantics), one module per
              concept (`decode` re-exports it under its old name).
* `candidate` - loading a base model + LoRA adapter, its checksum and identity.
* `fsm`     - the character-level state machine over the contract's answer skeleton, used by
              the constrained and score decoders.
* `pool`    - shards of the evaluation set on Ray actors (`ray.util.ActorPool`), Ray's own
              actor restarts and task retries, failed rows reported, results in input order.
* `metrics` - Macro-F1 / Macro-Recall / Micro-F1 / per-label F1, ParseOK, VAD 1-RMSE, Pearson,
              CCC, Ekman-projected Macro-F1, Valence Flip polarity sensitivity, bootstrap CI.
* `run`     - `EvalConfig` and `evaluate(cfg, records=None)`, on the in-process runner or the
              pool (`open_runner`): the API the screen calls; writes predictions.jsonl and
              metrics.json.
* `cli`     - `python -m emoloom evaluate` and `python -m emoloom predict`.
* `smoke_sft` - a minimal supervised fine-tuning loop for benches and tests only (gives a tiny
              random-init model a contract-shaped output); not the project's trainer.
"""
