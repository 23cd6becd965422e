"""`TrainConfig`: everything one training run of one candidate needs, as typed config data.

Loaded with `emoloom.config.load_config(TrainConfig, path, overrides)`; every field can be set
from YAML or as a dotted `key=value` override (the screen searches over them). Only light
imports here: the screen builds many configs before any heavy library is needed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from emoloom.config import StrictModel, config_hash
from emoloom.models import ModelSpec, is_builtin

# Built-in models are random init: their embeddings and output layer must be trained in full for
# the model to learn the contract's tokens at all; LoRA alone on random matrices learns far slower.
BUILTIN_MODULES_TO_SAVE = ["embed_tokens", "lm_head"]
# Default learning rates: random-init built-ins learn the contract from scratch and took 5e-3 to
# reach ParseOK >= 95% in two synthetic epochs; 2e-4 is the usual LoRA rate for pretrained models.
BUILTIN_LR, HUB_LR = 5e-3, 2e-4


class LoraSection(StrictModel):
    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    # None: per-architecture default (`emoloom.models.lora_targets(model_type)`).
    target_modules: list[str] | str | None = None
    # None: built-in (random-init) model -> embed_tokens + lm_head; hub/local model -> none.
    modules_to_save: list[str] | None = None


class DataSource(StrictModel):
    """One corpus split feeding training (pool A or B) and, optionally, the dev metrics."""

    corpus: str = "synthetic"
    # A path or hub id. For `synthetic`, None = generated under EMOLOOM_CACHE (data.synthetic_*).
    source: str | None = None
    # synthetic: which sub-corpus; other corpora: their own taxonomy or "ekman" (projected).
    taxonomy: str | None = None
    split: str = "train"
    dev_split: str | None = "dev"  # None: this source contributes no dev records
    limit: int | None = Field(None, ge=1)
    pool: Literal["A", "B"] = "A"


class DataSection(StrictModel):
    sources: list[DataSource] = Field(default_factory=lambda: [DataSource(taxonomy="goemotions")])
    synthetic_size: int = Field(2000, ge=1)
    synthetic_seed: int = 0
    lexicon: str | None = None  # None: the built-in lexicon
    label_weight: float = Field(0.5, ge=0, le=1)  # weak VAD: weight of the label anchor
    dev_size: int = Field(128, ge=0)  # dev records for the per-epoch head metrics (all sources)
    max_length: int = Field(512, ge=16)  # prompt + target tokens; longer examples are dropped


class AugmentSection(StrictModel):
    valence_flip: bool = True
    flip_rate: float = Field(0.3, ge=0, le=1)
    # substitute: word-map antonyms only; negate: "not <cue>" only; both: map first, else negate.
    flip_mode: Literal["substitute", "negate", "both"] = "substitute"


class SamplingSection(StrictModel):
    """A/B mixture with an entropy-aware class temperature (formula in emoloom/sampling.py)."""

    mix_b: float = Field(0.3, ge=0, le=1)  # share of draws from pool B (when it has records)
    schedule: Literal["constant", "linear", "cosine", "exponential"] = "cosine"
    t_start: float = Field(4.0, gt=0)
    t_end: float = Field(1.0, gt=0)
    kappa: float = Field(1.0, ge=0)  # heat-up factor when recent predictions collapse
    entropy_window: int = Field(256, ge=1)  # recent predictions the entropy is taken over


class LossSection(StrictModel):
    """Weight of every objective term (0 switches a term off; it is then neither computed nor logged)."""

    sft: float = Field(1.0, ge=0)
    emotion: float = Field(0.5, ge=0)
    vad: float = Field(0.5, ge=0)
    vad_preserve: float = Field(0.2, ge=0)
    appraisal: float = Field(0.2, ge=0)
    polarity: float = Field(0.1, ge=0)
    polarity_threshold: float = Field(0.3, ge=0, le=1)  # |TextBlob polarity| for "confident"
    polarity_scale: float = Field(10.0, gt=0)


class OptimSection(StrictModel):
    # None: per candidate: built-in (random init, embeddings trained in full) 5e-3, else 2e-4
    lr: float | None = Field(None, ge=0)  # 0 is allowed: an untrained control candidate
    head_lr: float | None = Field(None, gt=0)  # None: same as lr
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1)  # per worker
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, ge=0)  # 0: no clipping
    warmup_steps: int = Field(20, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)


class DistributedSection(StrictModel):
    # 0: the loop runs in this process, no Ray, no DeepSpeed (one CUDA device when use_gpu, else the CPU);
    # >= 1: Ray Train workers (DeepSpeed ZeRO or DDP), one GPU each when use_gpu
    num_workers: int = Field(0, ge=0)
    strategy: Literal["deepspeed", "ddp"] = "deepspeed"
    zero_stage: Literal[2, 3] = 2
    # auto: on a GPU that supports it, and for models of 20M+ parameters on a CPU with AMX/AVX512-BF16
    # (models.auto_bf16); true: bf16 autocast wherever the loop runs
    bf16: bool | Literal["auto"] = "auto"
    use_gpu: bool = False
    cpus_per_worker: int = Field(1, ge=1)
    # torch intra-op threads of each worker and of the in-process loop (None: cpus_per_worker).
    # One thread is the fast choice for tiny models on a busy 2-core box: two OpenMP threads
    # competing with other processes ran a tiny-qwen2 step ~20x slower than one thread.
    torch_threads: int | None = Field(None, ge=1)
    deepspeed_config: str | None = None  # None: emoloom/resources/deepspeed/zero{stage}.json
    max_failures: int = Field(0, ge=0)  # Ray Train worker-group restarts (resume from checkpoint)


class TrainConfig(StrictModel):
    model: ModelSpec = Field(default_factory=ModelSpec)
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection = Field(default_factory=DataSection)
    augment: AugmentSection = Field(default_factory=AugmentSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    loss: LossSection = Field(default_factory=LossSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    distributed: DistributedSection = Field(default_factory=DistributedSection)
    seed: int = 0
    out: str = "runs/train"
    epochs: int = Field(1, ge=1)
    # None: one pass over pool A + B at the aggregate batch size (batch_size * grad_accum * workers).
    steps_per_epoch: int | None = Field(None, ge=1)
    # Optimizer steps in all; when set it overrides epochs (as in HF Trainer), last epoch partial.
    max_steps: int | None = Field(None, ge=1)
    resume: bool = True  # continue from the newest checkpoint of the same config, if any
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(25, ge=1)

    @field_validator("out")
    @classmethod
    def _out_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("out must name a folder")
        return value

    # -- resolved views (defaults that depend on other fields) ---------------------------------

    def modules_to_save(self) -> list[str]:
        if self.lora.modules_to_save is not None:
            return list(self.lora.modules_to_save)
        return list(BUILTIN_MODULES_TO_SAVE) if is_builtin(self.model.name) else []

    def lr(self) -> float:
        if self.optim.lr is not None:
            return self.optim.lr
        return BUILTIN_LR if is_builtin(self.model.name) else HUB_LR

    def use_bf16(self) -> bool:
        if self.distributed.bf16 == "auto":
            from emoloom.models import auto_bf16

            return auto_bf16(self.model.name, gpu=self.distributed.use_gpu)
        return bool(self.distributed.bf16)

    def run_hash(self) -> str:
        """Identity of a run for resuming: the config without where it is written."""
        return config_hash(self, exclude={"out", "resume", "log_every"})

    def absolute(self) -> "TrainConfig":
        """A copy with `out` and local data/lexicon paths absolute (Ray workers change directory)."""

        def absolutize(p: str | None) -> str | None:
            return str(Path(p).expanduser().resolve()) if p and os.path.exists(os.path.expanduser(p)) else p

        data = self.data.model_copy(update={
            "lexicon": absolutize(self.data.lexicon),
            "sources": [s.model_copy(update={"source": absolutize(s.source)}) for s in self.data.sources],
        })
        dist = self.distributed.model_copy(update={"deepspeed_config": absolutize(self.distributed.deepspeed_config)})
        # models.load_base treats an existing path as a local model folder, anything else as a name
        name = self.model.name if is_builtin(self.model.name) else absolutize(self.model.name)
        model = self.model.model_copy(update={"name": name})
        return self.model_copy(update={"out": str(Path(self.out).expanduser().resolve()), "data": data,
                                       "distributed": dist, "model": model})


# The embedded default of `python -m emoloom train` with no CONFIG: a built-in tiny model on the
# synthetic GoEmotions corpus, tuned so it learns the JSON contract in a few CPU minutes.
# Measured (bench/train_speed.py --part recipe): ~1 min of training on 2 cores, ParseOK 98-99%
# on 100 dev prompts over three seeds.
DEFAULT_RUN = {
    "model": {"name": "tiny-qwen2"},
    "epochs": 2,
    "out": "runs/train-default",
}


def default_config(overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    from emoloom.config import load_config

    return load_config(TrainConfig, None, overrides, base=DEFAULT_RUN)
