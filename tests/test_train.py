"""Training runs: config, CLI outputs, determinism, adapter-only checkpoints, resume, Ray + DeepSpeed."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from emoloom.config import ConfigError, load_config
from emoloom.train.config import TrainConfig

# small enough for seconds per run: ~100 records, batches of 4, 2 epochs of 3 steps
SMALL = ["data.synthetic_size=100", "data.dev_size=8", "optim.batch_size=4", "steps_per_epoch=3", "epochs=2",
         "optim.warmup_steps=1", "log_every=1000", "augment.flip_rate=0.5"]


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    """Built-in models and data go to the session's temp folder unless EMOLOOM_CACHE is set."""
    old = {k: os.environ.get(k) for k in ("EMOLOOM_CACHE", "TOKENIZERS_PARALLELISM")}
    if not old["EMOLOOM_CACHE"]:
        os.environ["EMOLOOM_CACHE"] = str(tmp_path_factory.getbasetemp() / "emoloom-cache")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second OpenMP thread only costs on a busy 2-core box
    yield
    torch.set_num_threads(threads)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)


def small(out: Path, *more: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"out={out}", *SMALL, *more])


# -- config -----------------------------------------------------------------------------------------


def test_config_defaults_and_typos():
    cfg = TrainConfig()
    assert cfg.distributed.num_workers == 0 and cfg.distributed.strategy == "deepspeed"
    assert cfg.distributed.zero_stage == 2
    assert cfg.modules_to_save() == ["embed_tokens", "lm_head"]  # built-in: random init
    hub = load_config(TrainConfig, None, ["model.name=Qwen/Qwen2.5-0.5B"])
    assert hub.modules_to_save() == [] and hub.model.trust_remote_code is False
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        load_config(TrainConfig, None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="zero_stage"):
        load_config(TrainConfig, None, ["distributed.zero_stage=1"])
    assert cfg.run_hash() == load_config(TrainConfig, None, ["out=elsewhere"]).run_hash()
    assert cfg.run_hash() != load_config(TrainConfig, None, ["seed=1"]).run_hash()


def test_deepspeed_configs(tmp_path):
    from emoloom.train.loop import RESOURCES, deepspeed_config

    for stage in (2, 3):
        raw = json.loads((RESOURCES / f"zero{stage}.json").read_text())
        assert "optimizer" not in raw and "scheduler" not in raw  # stack.md trap 2
        cfg = load_config(TrainConfig, None, [f"distributed.zero_stage={stage}", "optim.batch_size=4",
                                              "optim.grad_accum=2"])
        filled = deepspeed_config(cfg, world_size=2, hidden_size=64)
        assert "auto" not in json.dumps(filled)
        assert filled["train_batch_size"] == 16 and filled["zero_optimization"]["stage"] == stage
        assert filled["bf16"]["enabled"] is False  # CPU
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"optimizer": {"type": "AdamW"}, "train_batch_size": "auto"}))
    cfg = load_config(TrainConfig, None, [f"distributed.deepspeed_config={bad}"])
    with pytest.raises(ValueError, match="optimizer"):
        deepspeed_config(cfg, 1, 64)


# -- in-process runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted in-process run of the small config (seed 0)."""
    from emoloom.train import fit

    return fit(small(tmp_path_factory.mktemp("reference")))


def test_cli_writes_adapter_heads_config_and_metrics(tmp_path, capsys):
    from emoloom.__main__ import main
    from emoloom.train.decode import load_trained

    out = tmp_path / "cli"
    assert main(["train", "max_steps=4", "seed=3", f"out={out}", *SMALL]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["loss_terms"]) == {"sft", "emotion", "vad", "vad_preserve", "appraisal", "polarity"}
    assert all(len(v) == 4 for v in metrics["loss_terms"].values())
    assert metrics["tokens_per_s"] > 0 and metrics["startup_s"] > 0
    cfg = load_config(TrainConfig, out / "config.yaml")
    assert cfg.seed == 3 and cfg.max_steps == 4 and cfg.model.name == "tiny-qwen2"
    model, tok, heads = load_trained(out)  # the adapter loads with peft
    assert heads.taxonomies == ["goemotions"]
    assert (out / "adapter" / "adapter_config.json").exists()
    assert main(["train", "optim.lrr=1", f"out={out}"]) == 2  # did-you-mean error, no traceback
    assert "did you mean" in capsys.readouterr().err


def test_same_seed_same_loss_curve(reference, tmp_path, monkeypatch):
    from emoloom.train import fit

    # a cold cache too: building the built-in model and the data must not shift any seeded init
    monkeypatch.setenv("EMOLOOM_CACHE", str(tmp_path / "cold-cache"))
    again = fit(small(tmp_path / "again"))
    assert again.metrics["loss"] == reference.metrics["loss"]
    assert again.metrics["loss_terms"] == reference.metrics["loss_terms"]
    other = fit(small(tmp_path / "other", "seed=1", "max_steps=2"))
    assert other.metrics["loss"] != reference.metrics["loss"][:2]
    assert len(reference.metrics["epochs"]) == 2  # one report per epoch
    for key in ("dev_head_macro_f1", "dev_vad_rmse", "loss_sft", "tokens_per_s"):
        assert key in reference.metrics["epochs"][-1]


def test_epoch_hook_joins_the_epoch_reports(tmp_path):
    from emoloom.train import fit

    calls = []

    def hook(epoch, model, tokenizer, metrics):
        calls.append((epoch, type(model).__name__, "dev_head_macro_f1" in metrics, tokenizer.eos_token_id))
        return {"objective": 0.1 * epoch}

    result = fit(small(tmp_path / "hook", "max_steps=2", "steps_per_epoch=1"), epoch_hook=hook)
    # epoch 0: once before the first step, with no metrics yet and nothing reported
    assert [c[0] for c in calls] == [0, 1, 2] and all(c[1] == "PeftModelForCausalLM" for c in calls)
    assert [c[2] for c in calls] == [False, True, True]
    assert [e["objective"] for e in result.metrics["epochs"]] == [0.1, 0.2]
    assert result.metrics["epochs_done"] == 2 and result.last("objective") == 0.2


def test_interrupted_run_resumes_from_its_last_checkpoint(reference, tmp_path, monkeypatch):
    from emoloom.train import fit
    from emoloom.train.loop import Trainer, local_checkpoints

    cfg = small(tmp_path / "resumed")
    original = Trainer.report

    def crash_after_first_epoch(self, metrics, engine, epoch):
        original(self, metrics, engine, epoch)
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(Trainer, "report", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg)
    assert [p.name for p in local_checkpoints(cfg.out)] == ["epoch_0001"]
    monkeypatch.setattr(Trainer, "report", original)
    assert (local_checkpoints(cfg.out)[0] / "scheduler.pt").exists()
    resumed = fit(cfg)
    assert resumed.metrics["loss"] == reference.metrics["loss"]  # the same curve as without the crash
    assert resumed.metrics["lr"] == reference.metrics["lr"]  # the scheduler resumed where it stopped
    assert [p.name for p in local_checkpoints(cfg.out)] == ["epoch_0001", "epoch_0002"]
    with pytest.raises(ValueError, match="different config"):
        fit(small(tmp_path / "resumed", "optim.lr=0.01"))


def test_adapter_only_checkpoint_reproduces_outputs(tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from emoloom.models import load_base
    from emoloom.train.heads import load_heads
    from emoloom.train.loop import Trainer, WorkerContext, local_checkpoints

    cfg = small(tmp_path / "adapter", "max_steps=3")
    trainer = Trainer(cfg, WorkerContext(), {})
    trainer.run()
    batch = trainer._collate(trainer.pools["A"][:4], trainer.pad_id, trainer.n_labels_max)
    trained = trainer.model.eval()
    with torch.no_grad():
        logits, h = trained.encode(batch)
        vad = trained.heads.vad_pred(h)
    folder = local_checkpoints(cfg.out)[-1]
    saved = load_file(folder / "adapter" / "adapter_model.safetensors")
    assert saved and all("lora_" in k or "embed_tokens" in k or "lm_head" in k for k in saved)
    assert not any("base_layer" in k or "layers.0.mlp.up_proj.weight" == k for k in saved)
    base = load_base(cfg.model)
    assert not list(folder.rglob("model.safetensors"))  # no copy of the frozen base
    reloaded = PeftModel.from_pretrained(base.model, str(folder / "adapter")).eval()
    heads = load_heads(folder / "heads.pt").eval()
    with torch.no_grad():
        out = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        h2 = out.hidden_states[-1][torch.arange(4), batch["prompt_end"]]
        assert torch.allclose(out.logits, logits, atol=1e-5)
        assert torch.allclose(heads.vad_pred(h2), vad, atol=1e-6)


# -- LR schedule, device and precision --------------------------------------------------------------


def _hand_written_lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """The schedule the loop used before transformers' get_scheduler (kept here to measure against)."""
    o = cfg.optim
    if o.warmup_steps and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return 1.0
    u = min(1.0, max(0.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps - 1)))
    shape = 1.0 - u if o.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * u))
    return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * shape


@pytest.mark.parametrize("schedule, decay_diff", [("cosine", 5.6e-4), ("linear", 6.1e-4), ("constant", 0.0)])
def test_lr_schedule_is_transformers_get_scheduler(schedule, decay_diff):
    """Over the GPU screen's training config (3 epochs of 500 steps, warmup 20): transformers'
    warmup is the old one a step later, the decay differs by < 6.1e-4 of the base rate."""
    import yaml

    from emoloom.train.schedule import build_scheduler

    train = yaml.safe_load((Path(__file__).parents[1] / "cluster" / "screen_gpu.yaml").read_text())["train"]
    cfg = TrainConfig.model_validate({**train, "epochs": 3, "optim": {**train["optim"], "schedule": schedule,
                                                                      "lr": 2e-4, "head_lr": 1e-3}})
    total, warmup = cfg.epochs * cfg.steps_per_epoch, cfg.optim.warmup_steps
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.AdamW([{"params": params[:1], "lr": 2e-4}, {"params": params[1:], "lr": 1e-3}], lr=2e-4)
    sched = build_scheduler(cfg, opt, total)
    new = []
    for _ in range(total):
        lm, head = sched.get_last_lr()
        assert head / 1e-3 == pytest.approx(lm / 2e-4, abs=1e-12)  # one factor for both groups
        new.append(lm / 2e-4)
        opt.step()
        sched.step()
    old = [_hand_written_lr_factor(cfg, s, total) for s in range(total)]
    assert new[0] == 0.0 and all(new[s + 1] == pytest.approx(old[s], abs=1e-12) for s in range(warmup - 1))
    diff = max(abs(a - b) for a, b in zip(new[warmup:], old[warmup:]))
    assert diff <= decay_diff, diff
    assert new[-1] == pytest.approx(cfg.optim.min_lr_ratio if schedule != "constant" else 1.0, abs=1e-3)


def test_in_process_bf16_autocast_reports_speed_and_peak_memory(tmp_path):
    """num_workers=0, no GPU, distributed.bf16=true: the plain engine trains under CPU bf16 autocast
    and metrics.json carries device, precision, tokens/s and the peak memory (process RSS on the CPU)."""
    from emoloom.train import fit

    m = fit(small(tmp_path / "bf16", "max_steps=2", "steps_per_epoch=1", "distributed.bf16=true")).metrics
    assert m["device"] == "cpu" and m["precision"] == "bf16-autocast" and m["engine"] == "plain"
    assert all(math.isfinite(x) for x in m["loss"]) and m["tokens_per_s"] > 0
    assert m["peak_memory"]["kind"] == "process_peak_rss" and m["peak_memory_bytes"] > 50 * 2**20
    assert m["epochs"][-1]["peak_memory_bytes"] == m["peak_memory_bytes"]
    fp32 = fit(small(tmp_path / "fp32", "max_steps=1")).metrics
    assert fp32["precision"] == "fp32"
    assert fp32["loss"][0] != m["loss"][0]  # bf16 changed the numbers: autocast was on


def test_one_gpu_without_ray_needs_a_cuda_device(tmp_path, monkeypatch):
    from emoloom.train import fit

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = small(tmp_path / "gpu", "max_steps=1", "distributed.use_gpu=true")
    assert cfg.distributed.num_workers == 0  # one GPU in-process: a valid config now
    with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
        fit(cfg)


# -- Ray Train + DeepSpeed ZeRO-2 on 2 CPU workers ---------------------------------------------------------


@pytest.mark.slow
def test_ray_train_deepspeed_zero2_two_workers(tmp_path, monkeypatch):
    """2 CPU workers, DeepSpeed ZeRO-2 on gloo: a worker fails in epoch 2, Ray Train restarts the
    group, the loop resumes from the epoch-1 checkpoint; no DeepSpeed op is JIT-built."""
    import ray

    from emoloom.train import fit

    extensions = tmp_path / "torch_extensions"
    extensions.mkdir()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(extensions))  # reaches the workers through fit
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    calls = tmp_path / "hook_calls.txt"

    def crash_once_in_epoch_2(epoch, model, tokenizer, metrics):
        # nested, so cloudpickle ships it by value to the workers (tests/ is not importable there)
        seen = calls.read_text().split() if calls.exists() else []
        calls.write_text(" ".join([*seen, str(epoch)]))
        if epoch == 2 and "2" not in seen:
            raise RuntimeError("simulated worker failure")
        return {"objective": float(epoch)}

    try:
        cfg = small(tmp_path / "ray", "distributed.num_workers=2", "distributed.strategy=deepspeed",
                    "distributed.zero_stage=2", "distributed.max_failures=1")
        result = fit(cfg, storage_path=tmp_path / "storage", epoch_hook=crash_once_in_epoch_2)
    finally:
        if started:
            ray.shutdown()
    # resumed after epoch 1, not restarted from scratch (epoch 0: before the fresh run's first step only)
    assert calls.read_text().split() == ["0", "1", "2", "2"]
    m = result.metrics
    assert m["world_size"] == 2 and m["engine"] == "deepspeed" and m["steps"] == 6 and len(m["loss"]) == 6
    assert [e["epoch"] for e in m["epochs"]] == [1, 2] and [e["objective"] for e in m["epochs"]] == [1.0, 2.0]
    assert m["epochs"][-1]["tokens_per_s"] > 0 and "dev_head_macro_f1" in m["epochs"][-1]
    assert (result.out / "adapter" / "adapter_model.safetensors").exists() and result.heads.exists()
    # every rank's state went into the merged checkpoint; DeepSpeed kept only trainable tensors
    ckpt = result.checkpoint
    assert (ckpt / "rank0.pt").exists() and (ckpt / "rank1.pt").exists()
    shards = sorted(p.name for p in (ckpt / "deepspeed" / "state").glob("*optim_states.pt"))
    assert len(shards) == 2, shards
    module = torch.load(ckpt / "deepspeed" / "state" / "mp_rank_00_model_states.pt", map_location="cpu",
                        weights_only=False)["module"]
    assert module and all("lora_" in k or "modules_to_save" in k or k.startswith("heads.") for k in module)
    # no DeepSpeed op was JIT-built (stack.md trap 1 and 2)
    built = [p for p in extensions.rglob("*") if p.suffix in (".so", ".o", ".ninja")]
    assert built == [], built


# -- divergence: NaN / inf stop the run -----------------------------------------------------------------


@pytest.mark.parametrize("override", ["optim.lr=.inf", "loss.sft=.nan", "sampling.t_start=.inf",
                                      "data.label_weight=.nan"])
def test_non_finite_config_values_are_rejected(override):
    with pytest.raises(ConfigError, match=rf"{override.split('=')[0]}: Input should be a finite number"):
        load_config(TrainConfig, None, [override])


def test_a_diverging_run_stops_at_the_first_non_finite_loss_term(tmp_path):
    from emoloom.train import fit
    from emoloom.train.loop import NonFiniteLossError, local_checkpoints

    # finite, but the weights overflow: step 1 warms up at rate 0 (transformers' warmup), step 2
    # applies 1e30, so step 3's loss is the first NaN (at the cosine's 5.5e29)
    cfg = small(tmp_path / "diverged", "optim.lr=1e30", "max_steps=3")
    with pytest.raises(NonFiniteLossError, match=r"^step 3: loss term 'sft' is nan \(lr 5\.5e\+29\)$"):
        fit(cfg)
    assert local_checkpoints(cfg.out) == [] and not (tmp_path / "diverged" / "adapter").exists()


@pytest.mark.parametrize("clip, message", [
    ("1.0", r"^step 1: gradient norm is (nan|inf) \(every loss term finite; lr [\d.e+-]+\)$"),
    # no clipping, no norm computed: the poisoned weights show up as a loss term one step later
    ("0", r"^step [23]: loss term '\w+' is nan"),
])
def test_non_finite_gradients_stop_the_run(tmp_path, monkeypatch, clip, message):
    from emoloom.train.loop import NonFiniteLossError, Trainer, WorkerContext

    original = Trainer.make_engine

    def poisoned(self):
        engine = original(self)
        # a finite loss whose backward overflows (as bf16 or a bad custom op can)
        next(self.model.heads.parameters()).register_hook(lambda grad: grad * float("inf"))
        return engine

    monkeypatch.setattr(Trainer, "make_engine", poisoned)
    cfg = small(tmp_path / "grads", "max_steps=3", f"optim.max_grad_norm={clip}")
    with pytest.raises(NonFiniteLossError, match=message):
        Trainer(cfg, WorkerContext(), {}).run()


def test_cli_reports_a_diverged_run_in_one_line(tmp_path, capsys):
    from emoloom.__main__ import main

    out = tmp_path / "cli-nan"
    assert main(["train", *SMALL, "optim.lr=1e30", "max_steps=3", f"out={out}"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "error: step 3: loss term 'sft' is nan (lr 5.5e+29)"
    assert not (out / "adapter").exists()
    assert main(["train", "optim.lr=.inf", f"out={out}"]) == 2  # rejected before any training
    assert "optim.lr: Input should be a finite number" in capsys.readouterr().err


def test_a_diverged_ray_train_worker_surfaces_as_the_same_error():
    from ray.train.v2.api.exceptions import WorkerGroupError

    from emoloom.train.loop import NonFiniteLossError
    from emoloom.train.ray_fit import diverged_worker

    nan = NonFiniteLossError("step 4: loss term 'vad' is inf (lr 0.001)")
    assert diverged_worker(WorkerGroupError("2 workers failed", {0: RuntimeError("peer gone"), 1: nan})) is nan
    assert diverged_worker(WorkerGroupError("1 worker failed", {0: RuntimeError("oom")})) is None
    assert diverged_worker(ValueError("not from Ray")) is None
