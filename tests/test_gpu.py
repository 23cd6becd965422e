"""The GPU path: DeepSpeed ZeRO-2 bf16 LoRA training, KV-off decoding and the evaluation actor pool
on CUDA, and the decoding speed of the >= 100M-parameter built-in model. Tests marked `gpu` skip
without CUDA; those needing Ray or DeepSpeed (absent on the lent GPU machines) skip saying so.

Run on a GPU machine with `python bench/gpu_check.py` (measures, runs these tests with the time
left, prints one table), or directly: `python -m pytest -m gpu tests/test_gpu.py`. Without a GPU,
`test_gpu_check_cpu_smoke` runs the check's --cpu-smoke mode (CI).

Bench numbers are written as JSON to $EMOLOOM_GPU_BENCH_JSON when it is set.
EMOLOOM_GPU_TESTS_ON_CPU=1 runs the same code on the CPU with smaller sizes: slow, and only there
to check these tests themselves on a machine without a GPU.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]
gpu = pytest.mark.gpu

ON_CPU = os.environ.get("EMOLOOM_GPU_TESTS_ON_CPU") == "1"
DEVICE = "cpu" if ON_CPU else "cuda"
BENCH_MODEL = "tiny-llama" if ON_CPU else "base-llama-110m"


@pytest.fixture(autouse=True)
def _needs_cuda(request):
    """Tests marked gpu skip without CUDA."""
    if request.node.get_closest_marker("gpu"):
        request.getfixturevalue("cuda")


@pytest.fixture(scope="module")
def cuda():
    """torch, after a skip without CUDA (imported lazily: collection stays fast)."""
    torch = pytest.importorskip("torch")
    if not ON_CPU and not torch.cuda.is_available():
        pytest.skip("needs CUDA: torch.cuda.is_available() is False (run bench/gpu_check.py on a GPU machine)")
    if not ON_CPU:
        # fp32 comparisons mean fp32: no TF32 matmuls
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return torch


@pytest.fixture(scope="module")
def ray_gpus(cuda):
    """A private local Ray with this machine's GPUs (address="local": a stale `ray start` address
    file is ignored, notes/stack.md)."""
    ray = pytest.importorskip("ray", reason="needs Ray (not installed here; the lent GPU machines lack it)")
    gpus = 0 if ON_CPU else cuda.cuda.device_count()
    ray.init(address="local", num_cpus=min(8, os.cpu_count() or 2), num_gpus=gpus, include_dashboard=False,
             log_to_driver=True)
    yield gpus
    ray.shutdown()


def record_bench(section: str, values: dict) -> None:
    """Merge `values` into the bench JSON ($EMOLOOM_GPU_BENCH_JSON) and print them."""
    print(f"\n[bench] {section}: {json.dumps(values, sort_keys=True)}")
    path = os.environ.get("EMOLOOM_GPU_BENCH_JSON")
    if not path:
        return
    p = Path(path)
    data = json.loads(p.read_text()) if p.exists() else {}
    data[section] = values
    p.write_text(json.dumps(data, indent=1, sort_keys=True))


def sft_on_device(model, tokenizer, records, *, seconds: float, max_steps: int, lr: float = 3e-3,
                  batch_size: int = 16, lora_r: int = 16, seed: int = 0):
    """A minute of LoRA SFT on the model's own device so greedy outputs close a JSON object
    (random-init built-ins never do). The same recipe as emoloom.eval.smoke_sft (prompt ->
    contract answer + EOS, loss on the answer), which builds its batches on the CPU only."""
    import torch
    from peft import LoraConfig, get_peft_model

    from emoloom.eval.smoke_sft import _targets, target_for
    from emoloom.models import prompt_ids

    torch.manual_seed(seed)
    rng = random.Random(seed)
    dev = next(model.parameters()).device
    model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0,
                                             target_modules=_targets(model), task_type="CAUSAL_LM"))
    examples = [(prompt_ids(tokenizer, r),
                 tokenizer(target_for(r), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
                for r in records if r.labels]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.train()
    start, step, losses = time.time(), 0, []
    while step < max_steps and time.time() - start < seconds:
        batch = rng.sample(examples, min(batch_size, len(examples)))
        width = max(len(p) + len(t) for p, t in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        for i, (p, t) in enumerate(batch):
            ids[i, :len(p) + len(t)] = torch.tensor(p + t)
            labels[i, len(p):len(p) + len(t)] = torch.tensor(t)
            mask[i, :len(p) + len(t)] = 1
        loss = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
        step += 1
    model.eval()
    return model.merge_and_unload(), {"sft_steps": step, "sft_s": round(time.time() - start, 1),
                                      "sft_loss_first": round(losses[0], 3), "sft_loss_last": round(losses[-1], 3)}


@gpu
def test_cuda_device(cuda):
    torch = cuda
    if ON_CPU:
        pytest.skip("EMOLOOM_GPU_TESTS_ON_CPU=1: no device to describe")
    props = torch.cuda.get_device_properties(0)
    x = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    assert torch.isfinite((x @ x).float()).all()
    record_bench("device", {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                            "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count(),
                            "bf16": torch.cuda.is_bf16_supported(), "torch": torch.__version__,
                            "cuda": torch.version.cuda})


@gpu
@pytest.mark.parametrize("workers", [1, 2])
def test_deepspeed_zero2_bf16_lora_fit(cuda, ray_gpus, tmp_path, workers):
    """emoloom.train.fit through Ray Train: DeepSpeed ZeRO-2, bf16, LoRA, one GPU per rank."""
    if not ON_CPU and workers > ray_gpus:
        pytest.skip(f"{workers} DeepSpeed ranks need {workers} GPUs, this machine has {ray_gpus}")
    if not ON_CPU and not cuda.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    pytest.importorskip("deepspeed", reason="needs DeepSpeed (not installed here; the lent GPU machines lack it)")
    from emoloom.config import load_config
    from emoloom.train import TrainConfig, fit
    from emoloom.train.engines import deepspeed_config

    cfg = load_config(TrainConfig, None, base={
        "model": {"name": "small-qwen2"},
        "out": str(tmp_path / "run"),
        "epochs": 1, "steps_per_epoch": 12 if ON_CPU else 40, "log_every": 5,
        "data": {"synthetic_size": 400, "dev_size": 32},
        "optim": {"batch_size": 8, "lr": 3e-3, "warmup_steps": 2},
        "distributed": {"num_workers": workers, "use_gpu": not ON_CPU, "strategy": "deepspeed",
                        "zero_stage": 2, "bf16": not ON_CPU, "cpus_per_worker": 1},
    })
    ds = deepspeed_config(cfg, workers, hidden_size=128)
    assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"] is (not ON_CPU)
    t0 = time.time()
    result = fit(cfg, storage_path=tmp_path / "ray")
    wall = time.time() - t0
    m = result.metrics
    assert m["engine"] == "deepspeed" and m["world_size"] == workers
    assert m["loss"] and all(math.isfinite(x) for x in m["loss"]), m["loss"]
    assert m["loss"][-1] < m["loss"][0], f"loss did not go down: {m['loss'][0]} -> {m['loss'][-1]}"
    assert (result.adapter / "adapter_config.json").exists() and result.heads.exists()
    assert result.last("dev_head_macro_f1") is not None
    record_bench(f"fit_zero2_{workers}rank", {"wall_s": round(wall, 1), "startup_s": m.get("startup_s"),
                                               "steps": m["steps"], "tokens_per_s": m.get("tokens_per_s"),
                                               "loss_first": round(m["loss"][0], 3),
                                               "loss_last": round(m["loss"][-1], 3)})


def _trained(name: str, dtype: str, seconds: float, max_steps: int, n_train: int = 400):
    from emoloom.data.synthetic import synthetic_records
    from emoloom.models import ModelSpec, load_base

    loaded = load_base(ModelSpec(name=name, dtype=dtype), device=DEVICE)
    model, info = sft_on_device(loaded.model, loaded.tokenizer, synthetic_records("goemotions", n_train, seed=3),
                                seconds=seconds, max_steps=max_steps)
    info["parameters"] = loaded.info["parameters"]
    return model, loaded.tokenizer, info


@gpu
def test_fast_decoder_equals_reference(cuda):
    """The fast KV-off decoder (batched, left-padded, draft-and-verify) gives the reference
    decoder's greedy tokens, row for row, in fp32 on the device."""
    from emoloom.data.synthetic import synthetic_records
    from emoloom.eval.decoding import Decoder

    model, tok, info = _trained("tiny-qwen2", "float32", seconds=30 if ON_CPU else 40, max_steps=300)
    records = synthetic_records("goemotions", 24, seed=11, split="dev")
    ref_dec = Decoder(model, tok, "reference", max_new_tokens=64)
    prompts = ref_dec.prepare(records)
    ref = ref_dec.generate(prompts, "goemotions")
    for pack in (None, True):  # the device's default (padded on CUDA), and packed rows forced
        fast_dec = Decoder(model, tok, "fast", max_new_tokens=64, batch_size=8, pack=pack)
        fast = fast_dec.generate(prompts, "goemotions")
        bad = [i for i, (a, b) in enumerate(zip(ref, fast)) if a.tokens != b.tokens]
        detail = [(i, ref[i].raw[:80], fast[i].raw[:80]) for i in bad[:3]]
        assert not bad, f"pack={pack}: {len(bad)}/{len(records)} rows differ (row, reference, fast): {detail}"
    closed = sum(g.stop == "json_closed" for g in ref)
    record_bench("decode_equality_fp32", {**info, "rows": len(records), "json_closed": closed,
                                          "packed": fast_dec._packing,
                                          "forwards_reference": sum(g.forwards for g in ref),
                                          "forwards_fast": sum(g.forwards for g in fast)})


@gpu
def test_eval_actor_pool_shares_a_gpu(cuda, ray_gpus):
    """The screen's evaluation pool shape: two actors on half a GPU each, KV-off fast decoder."""
    if not ON_CPU and ray_gpus < 1:
        pytest.skip("no GPU in the Ray instance")
    from emoloom.data.synthetic import synthetic_records
    from emoloom.eval.run import EvalConfig, evaluate
    from emoloom.models import ModelSpec

    records = synthetic_records("goemotions", 32, seed=5, split="dev")
    cfg = EvalConfig(model=ModelSpec(name="tiny-qwen2"), decoder="fast", actors=2,
                     gpus_per_actor=0.0 if ON_CPU else 0.5, max_new_tokens=48, batch_size=8,
                     shard_size=8, bootstrap=0)
    t0 = time.time()
    result = evaluate(cfg, records)
    assert result["data"]["records"] == 32 and result["failed_rows"] == 0
    record_bench("eval_pool_2x0.5gpu", {"wall_s": round(time.time() - t0, 1),
                                        "examples_per_s": result["examples_per_s"],
                                        "forwards_per_example": result["forwards_per_example"]})


@gpu
def test_eval_speed_base_llama_110m(cuda):
    """Decoding speed of the >= 100M-parameter built-in (random init + a minute of SFT) in its
    default dtype (bf16 on CUDA): reference vs fast vs constrained, and transformers' KV-cached
    generate as the outside baseline. Fast must beat reference; constrained must parse 100%."""
    from emoloom.contract import parse_output
    from emoloom.data.synthetic import synthetic_records
    from emoloom.eval.decoding import Decoder, hf_generate_cached

    model, tok, info = _trained(BENCH_MODEL, "auto", seconds=20 if ON_CPU else 60, max_steps=400)
    if not ON_CPU:
        assert info["parameters"] >= 100e6, info
    n = 16 if ON_CPU else 64
    n_ref = 4 if ON_CPU else 16  # reference decodes one prompt at a time: time a subset
    records = synthetic_records("goemotions", n, seed=13, split="dev")
    out: dict = {"model": BENCH_MODEL, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                 "rows": n, **info}

    def timed(mode: str, rows, batch_size: int = 16):
        dec = Decoder(model, tok, mode, max_new_tokens=96, batch_size=batch_size)
        prompts = dec.prepare(rows)
        if DEVICE == "cuda":
            cuda.cuda.synchronize()
        t = time.time()
        gens = dec.generate(prompts, "goemotions")
        if DEVICE == "cuda":
            cuda.cuda.synchronize()
        s = time.time() - t
        new = sum(len(g.tokens) for g in gens)
        out[mode] = {"rows": len(rows), "seconds": round(s, 3), "examples_per_s": round(len(rows) / s, 2),
                     "new_tokens_per_s": round(new / s, 1),
                     "forwards_per_example": round(sum(g.forwards for g in gens) / len(gens), 2),
                     "json_closed": sum(g.stop == "json_closed" for g in gens), "packed": dec._packing}
        return gens

    ref = timed("reference", records[:n_ref])
    fast = timed("fast", records)
    constrained = timed("constrained", records)
    agree = sum(a.tokens == b.tokens for a, b in zip(ref, fast))
    # bf16 is not asserted exact (batch shapes may flip near ties; fp32 is, above): the rate and
    # the greedy choices within bf16's resolution are recorded instead.
    out["fast_equals_reference_rows"] = f"{agree}/{len(ref)}"
    out["near_ties"] = {"reference": sum(g.near_ties for g in ref), "fast": sum(g.near_ties for g in fast[:n_ref])}
    out["speedup_fast_vs_reference"] = round(out["fast"]["examples_per_s"] / out["reference"]["examples_per_s"], 2)
    dec = Decoder(model, tok, "fast", max_new_tokens=96)
    t = time.time()
    cached = hf_generate_cached(model, tok, dec.prepare(records), max_new_tokens=96, batch_size=16)
    s = time.time() - t
    out["kv_cache_generate"] = {"rows": n, "seconds": round(s, 3), "examples_per_s": round(n / s, 2),
                                "new_tokens_per_s": round(sum(len(g.tokens) for g in cached) / s, 1)}
    parse_ok = sum(parse_output(g.raw, "goemotions").parse_ok for g in constrained)
    out["constrained"]["parse_ok"] = f"{parse_ok}/{n}"
    record_bench("eval_speed", out)
    assert parse_ok == n, f"constrained decoding must always parse: {parse_ok}/{n}"
    assert out["fast"]["examples_per_s"] > out["reference"]["examples_per_s"], out


def test_gpu_check_cpu_smoke(tmp_path):
    """bench/gpu_check.py --cpu-smoke: the check's code end to end on the CPU with tiny sizes,
    TextBlob hidden (as on the lent GPU machines): every table section is printed, the rates file
    is written but never as bench/gpu_rates.json, and the screen estimate uses the rates."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    rates = repo / "bench" / "gpu_rates.json"
    before = rates.read_bytes() if rates.exists() else None
    env = {**os.environ, "EMOLOOM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--cpu-smoke", "--out", str(tmp_path / "out"),
                           "--without", "textblob"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    wall = time.time() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for section in ("LoRA SFT, bf16 autocast", "Decoding tiny-llama", "One device, no Ray",
                    "cluster/screen_gpu.yaml, implied per trial", "note: textblob missing"):
        assert section in out, section
    data = json.loads((tmp_path / "out" / "rates.json").read_text())
    assert data["cpu_smoke"] is True
    assert [(r["model"], r["batch_size"]) for r in data["train"]] == [
        ("tiny-llama", 2), ("tiny-llama", 4), ("qwen2.5-shape-tiny", 2), ("qwen2.5-shape-tiny", 4)]
    assert all(r["tokens_per_s"] > 0 and r["peak_memory_bytes"] > 0 for r in data["train"])
    assert {(r["dtype"], r["decoder"]) for r in data["decode"]} == {
        (d, m) for d in ("float32", "bfloat16") for m in ("reference", "fast", "kv_cache_generate")}
    # fp32 on one device: the fast decoder gives the reference's tokens row for row
    assert all(r["identical_rate"] == 1.0 for r in data["decode"] if r["decoder"] == "fast" and r["dtype"] == "float32")
    assert data["fit"]["device"] == "cpu" and data["fit"]["precision"] == "bf16-autocast"
    assert (rates.read_bytes() if rates.exists() else None) == before  # smoke numbers are not GPU rates
    print(f"gpu_check --cpu-smoke: {wall:.0f}s")


def test_gpu_screen_estimate_from_measured_rates(tmp_path):
    """The dry run's GPU-hours of cluster/screen_gpu.yaml from a rates file, by hand: 3 epochs x
    500 steps x batch 8 x accum 2 x 2 ranks; evaluation rows 3 x 32 + 500 + 500."""
    from emoloom.config import load_config
    from emoloom.screen.config import ScreenConfig
    from emoloom.screen.defaults import DEFAULT_SCREEN
    from emoloom.screen.gpu_estimate import NO_RATES, estimate_gpu_hours
    from emoloom.screen.space import load_space

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(ScreenConfig, repo / "cluster" / "screen_gpu.yaml", [], base=DEFAULT_SCREEN)
    space = load_space(cfg.space)
    missing = estimate_gpu_hours(cfg, space, rates_path=tmp_path / "absent.json")
    assert missing == {"gpu_estimate": {"skipped": NO_RATES}}
    smoke = tmp_path / "smoke.json"
    smoke.write_text(json.dumps({"cpu_smoke": True, "train": [], "decode": []}))
    assert estimate_gpu_hours(cfg, space, rates_path=smoke) == missing  # CPU numbers are no GPU rates
    rates = {"train": [{"model": "m", "batch_size": 8, "seq_len": 100, "tokens_per_s": 20000.0},
                       {"model": "m", "batch_size": 32, "seq_len": 100, "tokens_per_s": 50000.0}],
             "decode": [{"decoder": "fast", "dtype": "float32", "examples_per_s": 1.0, "max_new_tokens": 96},
                        {"decoder": "fast", "dtype": "bfloat16", "examples_per_s": 4.0, "max_new_tokens": 48}]}
    est = estimate_gpu_hours(cfg, space, rates=rates)["gpu_estimate"]
    t = est["by_measured_model"]["m"]
    assert est["epochs_per_trial"] == 3 and est["steps_per_trial"] == 1500 and t["train_batch_measured"] == 8
    assert t["train_examples"] == 1500 * 8 * 2 * 2
    assert t["train_s"] == pytest.approx(48000 / (200 * 2), abs=0.1)  # 200 examples/s per GPU
    assert t["eval_rows"] == 3 * 32 + 500 + 500
    assert t["eval_s"] == pytest.approx(1096 / 4.0 * 96 / 48, abs=0.1)  # bf16 rate, rescaled to 96 new tokens
    assert t["screen_gpu_hours_upper_bound"] == pytest.approx(16 * (120 * 2 + 548 * 1) / 3600, abs=0.01)
