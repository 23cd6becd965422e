#!/usr/bin/env python3
"""The GPU check of EmoLoom: one command, under 8 minutes, on a lent GPU machine; one table.

    python bench/gpu_check.py                # on a machine with CUDA: measures, writes bench/gpu_rates.json
    python bench/gpu_check.py --cpu-smoke    # no GPU: the same code, tiny sizes, < 60 s (CI runs it)

Needs only what travels with the checkout: torch (CUDA build), transformers, peft, tokenizers,
scikit-learn, pandas, pydantic, pyyaml. Ray, DeepSpeed, MLflow, Optuna and TextBlob are not needed;
what needs them is skipped with the reason in the table.

What it measures (one table):
1. LoRA SFT throughput: tokens/s, MFU and peak memory for `base-llama-110m` and for a random-init
   model of Qwen2.5-0.5B's published shape (config only, no weights), batch sizes 8 and 32, bf16
   autocast over fp32 weights (what the training loop's plain engine does).
   MFU = FLOPs per token x tokens/s / the GPU's dense bf16 peak (table below, or --peak-tflops).
   FLOPs per token, for matmul parameters P (every nn.Linear weight: LoRA's too, lm_head even when
   tied), LoRA parameters P_t, L layers, width d, sequence s:
   forward 2P + 4Lsd (attention scores and values, counted over the full sequence as PaLM does);
   backward 2P (activation gradients) + 2P_t (weight gradients of trainable weights only) + 8Lsd.
2. Decoding: the fast KV-off decoder vs the reference decoder vs transformers' KV-cached generate,
   examples/s and the share of rows whose tokens equal the reference's, in fp32 and bf16
   (`base-llama-110m`, random init: rows decode to max_new_tokens, a worst case).
3. One GPU without Ray: `emoloom.train.fit` in-process (`distributed.num_workers=0`,
   `distributed.use_gpu=true`) for a few steps: tokens/s, peak memory, precision from metrics.json.
4. The implied time per trial of cluster/screen_gpu.yaml (training + evaluation) and the screen's
   GPU-hours, from the rates just measured (`emoloom.screen.gpu_estimate`, the same code as
   `python -m emoloom.screen cluster/screen_gpu.yaml --dry-run`).
5. `pytest tests/test_gpu.py` with what time is left (not in --cpu-smoke).

Rates go to bench/gpu_rates.json on a GPU (the dry run reads them; commit the file with the
machine named in it) and to <out>/rates.json always; --cpu-smoke never writes bench/gpu_rates.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Qwen/Qwen2.5-0.5B config.json as published (shape only; no weights are loaded).
QWEN25_05B = {
    "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu",
}
# Dense bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s (no sparsity). First match wins.
PEAK_BF16_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0),
                    ("L4", 121.0), ("A10", 125.0)]
OPTIONAL = ("ray", "deepspeed", "mlflow", "optuna", "textblob")

SIZES = {  # what runs where: the GPU sizes fit 8 minutes on one H100-class GPU
    "gpu": {"models": ["base-llama-110m", "qwen2.5-0.5b-shape"], "batches": [8, 32], "seq_len": 128, "steps": 10,
            "warmup": 3, "decode_model": "base-llama-110m", "decode_rows": 64, "decode_ref_rows": 16,
            "max_new_tokens": 96, "decode_batch": 32, "fit_model": "base-llama-110m", "fit_steps": 30},
    "cpu": {"models": ["tiny-llama", "qwen2.5-shape-tiny"], "batches": [2, 4], "seq_len": 32, "steps": 2,
            "warmup": 1, "decode_model": "tiny-llama", "decode_rows": 4, "decode_ref_rows": 2,
            "max_new_tokens": 8, "decode_batch": 4, "fit_model": "tiny-qwen2", "fit_steps": 2},
}


def log(msg: str) -> None:
    print(f"[gpu_check {time.monotonic() - T0:5.1f}s] {msg}", flush=True)


T0 = time.monotonic()


# -- environment --------------------------------------------------------------------------------


def environment(device, hide: set[str]) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "missing": [m for m in OPTIONAL if m in hide or importlib.util.find_spec(m) is None]}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported())
    else:
        env.update(name=f"CPU ({os.cpu_count()} cores)", bf16=True)  # CPU autocast supports bf16
    return env


def textblob_stand_in(hide: set[str]) -> str | None:
    """Without TextBlob (absent on the lent GPU machines) the training data preparation cannot
    compute polarity and appraisal features: this check (and only this check) puts a stand-in
    returning polarity 0 in its own process and switches the two terms off. Returns the note."""
    if "textblob" not in hide and importlib.util.find_spec("textblob") is not None:
        return None
    module = types.ModuleType("textblob")

    class TextBlob:  # noqa: D401 - the one attribute emoloom.train.appraisal.sentiment reads
        def __init__(self, text: str) -> None:
            self.sentiment = types.SimpleNamespace(polarity=0.0, subjectivity=0.0)

    module.TextBlob = TextBlob
    sys.modules["textblob"] = module
    return ("textblob missing: this check's training run uses a stand-in (polarity 0) with "
            "loss.polarity=0 and loss.appraisal=0; production code still requires textblob")


def peak_flops(env: dict, override: float | None) -> tuple[float | None, str]:
    if override:
        return override * 1e12, f"--peak-tflops {override}"
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in env["name"]:
            return tflops * 1e12, f"{key} dense bf16 {tflops:g} TFLOP/s"
    return None, f"no bf16 peak known for {env['name']} (pass --peak-tflops)"


# -- 1. LoRA SFT throughput -----------------------------------------------------------------------


def build_model(name: str, device):
    """(model, model_type) in fp32 on `device`: a built-in, or a random-init model of a published shape."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    if name.startswith("qwen2.5"):
        shape = dict(QWEN25_05B)
        if name.endswith("-tiny"):  # the smoke test's stand-in: same architecture, toy sizes
            shape.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512)
        torch.manual_seed(0)
        with device:  # built on the device: a 0.5B init on the CPU alone takes seconds
            model = AutoModelForCausalLM.from_config(Qwen2Config(**shape)).float()
        return model, "qwen2"
    from emoloom.models import ModelSpec, load_base

    loaded = load_base(ModelSpec(name=name, dtype="float32"), device=str(device))
    return loaded.model, loaded.info["model_type"]


def flops_per_token(model, seq_len: int) -> float:
    from torch import nn

    cfg = model.config
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    attn = cfg.num_hidden_layers * seq_len * cfg.hidden_size
    return 4 * matmul + 2 * trainable + 12 * attn


def bench_train(name: str, batches: list[int], seq_len: int, steps: int, warmup: int, device, peak: float | None):
    import torch
    from peft import LoraConfig, get_peft_model

    from emoloom.models import lora_targets
    from emoloom.train.context import peak_memory, reset_peak_memory

    base, model_type = build_model(name, device)
    params = sum(p.numel() for p in base.parameters())
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=lora_targets(model_type),
                                            task_type="CAUSAL_LM"))
    model.train()
    fpt = flops_per_token(model, seq_len)
    vocab = model.config.vocab_size
    rows = []
    for batch in batches:
        row = {"model": name, "parameters": params, "batch_size": batch, "seq_len": seq_len,
               "precision": "bf16-autocast", "flops_per_token": fpt}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        gen = torch.Generator().manual_seed(batch)
        ids = torch.randint(0, vocab, (batch, seq_len), generator=gen).to(device)
        try:
            reset_peak_memory(device)
            for i in range(warmup + steps):
                if i == warmup:
                    sync(device)
                    t = time.perf_counter()
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                    loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            sync(device)
            dt = time.perf_counter() - t
            tps = batch * seq_len * steps / dt
            mem = peak_memory(device)
            row.update(tokens_per_s=round(tps, 1), step_s=round(dt / steps, 4), loss=round(loss.item(), 3),
                       mfu=round(fpt * tps / peak, 4) if peak else None, peak_memory_bytes=mem["bytes"],
                       peak_memory_kind=mem["kind"])
        except torch.cuda.OutOfMemoryError as exc:  # (torch.OutOfMemoryError is newer)
            row.update(tokens_per_s=None, error=f"out of memory: {str(exc).splitlines()[0][:80]}")
        del opt
        empty_cache(device)
        rows.append(row)
        log(f"train {name} batch {batch}: {row.get('tokens_per_s')} tokens/s, MFU {row.get('mfu')}")
    del model, base
    empty_cache(device)
    return rows


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def empty_cache(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- 2. decoding --------------------------------------------------------------------------------


def bench_decode(name: str, dtype: str, rows: int, ref_rows: int, max_new_tokens: int, batch: int, device):
    from emoloom.data.synthetic import synthetic_records
    from emoloom.eval.decoding import Decoder, hf_generate_cached
    from emoloom.models import ModelSpec, load_base

    loaded = load_base(ModelSpec(name=name, dtype=dtype), device=str(device))
    model, tok = loaded.model.eval(), loaded.tokenizer
    records = synthetic_records("goemotions", rows, seed=13, split="dev")
    prompts = Decoder(model, tok, "reference", max_new_tokens=max_new_tokens).prepare(records)

    def timed(run, n):
        sync(device)
        t = time.perf_counter()
        gens = run(prompts[:n])
        sync(device)
        return gens, time.perf_counter() - t

    ref, ref_s = timed(lambda p: Decoder(model, tok, "reference", max_new_tokens=max_new_tokens).generate(p), ref_rows)
    fast, fast_s = timed(lambda p: Decoder(model, tok, "fast", max_new_tokens=max_new_tokens,
                                           batch_size=batch).generate(p), rows)
    kv, kv_s = timed(lambda p: hf_generate_cached(model, tok, p, max_new_tokens=max_new_tokens, batch_size=batch), rows)
    out = []
    for decoder, gens, seconds in (("reference", ref, ref_s), ("fast", fast, fast_s), ("kv_cache_generate", kv, kv_s)):
        same = sum(a.tokens == b.tokens for a, b in zip(ref, gens))
        out.append({"model": name, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                    "decoder": decoder, "rows": len(gens), "examples_per_s": round(len(gens) / seconds, 2),
                    "new_tokens_per_s": round(sum(len(g.tokens) for g in gens) / seconds, 1),
                    "identical_rate": round(same / len(ref), 3), "identical_rows": f"{same}/{len(ref)}",
                    "max_new_tokens": max_new_tokens, "batch_size": batch})
        log(f"decode {dtype} {decoder}: {out[-1]['examples_per_s']} examples/s, identical {out[-1]['identical_rows']}")
    del model
    empty_cache(device)
    return out


# -- 3. one GPU, no Ray ---------------------------------------------------------------------------


def bench_fit(name: str, steps: int, device, out: Path, stand_in: bool) -> dict:
    from emoloom.config import load_config
    from emoloom.train import TrainConfig, fit

    overrides = [f"model.name={name}", f"out={out / 'fit'}", f"max_steps={steps}", f"steps_per_epoch={steps}",
                 "data.synthetic_size=400", "data.dev_size=16", "optim.batch_size=8", "optim.warmup_steps=2",
                 "log_every=1000", "resume=false", f"distributed.use_gpu={'true' if device.type == 'cuda' else 'false'}",
                 "distributed.bf16=true", "distributed.torch_threads=1"]
    if stand_in:
        overrides += ["loss.polarity=0", "loss.appraisal=0"]
    t = time.perf_counter()
    m = fit(load_config(TrainConfig, None, overrides)).metrics
    row = {"model": name, "steps": m["steps"], "device": m["device"], "precision": m["precision"],
           "engine": m["engine"], "tokens_per_s": round(m["tokens_per_s"], 1), "peak_memory_bytes": m["peak_memory_bytes"],
           "peak_memory_kind": (m.get("peak_memory") or {}).get("kind"), "loss_first": round(m["loss"][0], 3),
           "loss_last": round(m["loss"][-1], 3), "fit_s": round(time.perf_counter() - t, 1)}
    log(f"fit {name} in-process on {row['device']}: {row['tokens_per_s']} tokens/s, {row['precision']}")
    return row


# -- 4. the GPU screen's trial time ---------------------------------------------------------------


def screen_estimate(rates: dict) -> dict:
    from emoloom.config import load_config
    from emoloom.screen.config import ScreenConfig
    from emoloom.screen.defaults import DEFAULT_SCREEN
    from emoloom.screen.gpu_estimate import estimate_gpu_hours
    from emoloom.screen.space import load_space

    cfg = load_config(ScreenConfig, REPO / "cluster" / "screen_gpu.yaml", [], base=DEFAULT_SCREEN)
    space = load_space(cfg.space)
    return estimate_gpu_hours(cfg, space, rates=rates).get("gpu_estimate", {})


# -- 5. the GPU tests -----------------------------------------------------------------------------


def run_tests(seconds: float, out: Path) -> dict:
    import xml.etree.ElementTree as ET

    junit = out / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-p", "no:cacheprovider", "-q", "-rs",
           f"--junitxml={junit}"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds)
        (out / "pytest.log").write_text(proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired:
        return {"result": f"killed at the {seconds:.0f}s left in the budget"}
    cases = []
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            result, note = "PASS", ""
            for tag, label in (("failure", "FAIL"), ("error", "ERROR"), ("skipped", "SKIP")):
                el = case.find(tag)
                if el is not None:
                    result, note = label, (el.get("message") or "").splitlines()[0][:90] if el.get("message") else ""
                    break
            cases.append({"test": case.get("name"), "result": result, "s": round(float(case.get("time", 0)), 1),
                          "note": note})
    return {"result": f"exit {proc.returncode}", "cases": cases}


# -- the table ------------------------------------------------------------------------------------


def gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def print_table(report: dict) -> None:
    env = report["environment"]
    lines = ["", "=" * 96,
             f"EmoLoom GPU check{' (--cpu-smoke: CPU numbers, not GPU rates)' if report['cpu_smoke'] else ''}: "
             f"{env['name']}, torch {env['torch']}, CUDA {env['cuda']}, python {env['python']}",
             f"missing (their tests skip): {', '.join(env['missing']) or 'none'}; MFU peak: {report['peak']}"]
    for note in report["notes"]:
        lines.append(f"note: {note}")
    lines += ["", "LoRA SFT, bf16 autocast, r=16, seq_len {}".format(report["train"][0]["seq_len"] if report["train"] else "-"),
              f"  {'model':<22} {'params':>9} {'batch':>5} {'tokens/s':>10} {'MFU':>7} {'peak GiB':>9}  note"]
    for r in report["train"]:
        mfu = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
        tps = "-" if r.get("tokens_per_s") is None else f"{r['tokens_per_s']:.0f}"
        lines.append(f"  {r['model']:<22} {r['parameters'] / 1e6:>8.1f}M {r['batch_size']:>5} {tps:>10} {mfu:>7} "
                     f"{gib(r.get('peak_memory_bytes')):>9}  {r.get('error', r.get('peak_memory_kind', ''))}")
    if report["decode"]:
        d0 = report["decode"][0]
        lines += ["", f"Decoding {d0['model']} (random init: rows run to max_new_tokens={d0['max_new_tokens']}), "
                      f"batch {d0['batch_size']}",
                  f"  {'dtype':<9} {'decoder':<18} {'rows':>5} {'examples/s':>11} {'new tok/s':>10}  identical to reference"]
        for r in report["decode"]:
            lines.append(f"  {r['dtype']:<9} {r['decoder']:<18} {r['rows']:>5} {r['examples_per_s']:>11} "
                         f"{r['new_tokens_per_s']:>10}  {r['identical_rows']} ({100 * r['identical_rate']:.0f}%)")
    f = report.get("fit")
    lines += ["", "One device, no Ray: emoloom.train.fit in-process (distributed.num_workers=0)"]
    if isinstance(f, dict) and "tokens_per_s" in f:
        lines.append(f"  {f['model']} {f['steps']} steps on {f['device']}, {f['precision']}, engine {f['engine']}: "
                     f"{f['tokens_per_s']:.0f} tokens/s, peak {gib(f['peak_memory_bytes'])} GiB ({f['peak_memory_kind']}), "
                     f"loss {f['loss_first']} -> {f['loss_last']}")
    else:
        lines.append(f"  {f}")
    est = report.get("screen_estimate") or {}
    lines += ["", "cluster/screen_gpu.yaml, implied per trial (training + evaluation)"]
    if "by_measured_model" in est:
        lines.append(f"  {est['trials']} trials x {est['epochs_per_trial']} epochs ({est['steps_per_trial']} steps), "
                     f"{est['train_gpus']:g} training GPUs + {est['eval_gpus']:g} evaluation GPU(s) per trial")
        for model, t in est["by_measured_model"].items():
            if "trial_s" in t:
                lines.append(f"  as {model:<22} train {t['train_s']:>9.0f}s  eval {t['eval_s']:>7.0f}s  trial "
                             f"{t['trial_s'] / 3600:>6.2f} h  screen <= {t['screen_gpu_hours_upper_bound']:g} GPU-h")
            else:
                lines.append(f"  as {model}: {t.get('skipped')}")
        lines += [f"  assumes: {a}" for a in est["assumptions"]]
    else:
        lines.append(f"  {est.get('skipped', est)}")
    tests = report.get("tests")
    if tests:
        lines += ["", f"pytest tests/test_gpu.py: {tests['result']}"]
        for c in tests.get("cases", []):
            lines.append(f"  {c['test']:<44} {c['result']:<5} {c['s']:>6}s  {c['note']}")
    lines += ["", f"total {time.monotonic() - T0:.0f}s; rates: {report['rates_files']}", "=" * 96]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="no GPU: the same code with tiny sizes on the CPU")
    ap.add_argument("--out", type=Path, default=None, help="logs, rates.json, cache (default: a new /tmp folder)")
    ap.add_argument("--rates-out", type=Path, default=None,
                    help="where the measured rates go (default on a GPU: bench/gpu_rates.json; never in --cpu-smoke)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
    ap.add_argument("--budget", type=float, default=450, help="seconds for the whole check (the tests get what is left)")
    ap.add_argument("--no-tests", action="store_true", help="skip pytest tests/test_gpu.py")
    ap.add_argument("--without", action="append", default=[], choices=OPTIONAL,
                    help="behave as if this optional package were missing (to exercise the stand-ins)")
    args = ap.parse_args(argv)

    import tempfile

    import torch

    out = (args.out or Path(tempfile.mkdtemp(prefix="emoloom-gpu-check-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("EMOLOOM_CACHE", str(out / "cache"))  # built-in models and data: never the user's cache
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.cpu_smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda", 0)
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 decoding compared as fp32
    else:
        print("gpu_check: torch sees no CUDA device; run with --cpu-smoke to check the code on a CPU", file=sys.stderr)
        return 2
    size = SIZES["cpu" if args.cpu_smoke else "gpu"]
    hide = set(args.without)
    env = environment(device, hide)
    peak, peak_note = peak_flops(env, args.peak_tflops) if device.type == "cuda" else (None, "CPU: no MFU")
    notes = []
    stand_in = textblob_stand_in(hide)
    if stand_in:
        notes.append(stand_in)
    log(f"device {env['name']}, out {out}")

    report: dict = {"cpu_smoke": args.cpu_smoke, "environment": env, "peak": peak_note, "notes": notes,
                    "train": [], "decode": []}
    for name in size["models"]:
        report["train"] += bench_train(name, size["batches"], size["seq_len"], size["steps"], size["warmup"], device, peak)
    for dtype in ("float32", "bfloat16"):
        report["decode"] += bench_decode(size["decode_model"], dtype, size["decode_rows"], size["decode_ref_rows"],
                                         size["max_new_tokens"], size["decode_batch"], device)
    try:
        report["fit"] = bench_fit(size["fit_model"], size["fit_steps"], device, out, bool(stand_in))
    except Exception as exc:  # noqa: BLE001 - the table says why, the other rows still count
        report["fit"] = f"failed: {type(exc).__name__}: {exc}"
    rates = {"schema": 1, "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu_smoke": args.cpu_smoke,
             "device": env, "train": report["train"], "decode": report["decode"],
             "fit": report["fit"] if isinstance(report["fit"], dict) else None}
    files = [out / "rates.json"]
    if args.rates_out or not args.cpu_smoke:
        files.append(args.rates_out or REPO / "bench" / "gpu_rates.json")
    for f in files:
        f.write_text(json.dumps(rates, indent=1) + "\n")
    report["rates_files"] = ", ".join(str(f) for f in files)
    report["screen_estimate"] = screen_estimate(rates)
    left = args.budget - (time.monotonic() - T0)
    if args.cpu_smoke or args.no_tests:
        report["tests"] = None
    elif left < 60:
        report["tests"] = {"result": f"not run: {left:.0f}s left of the {args.budget:.0f}s budget"}
    else:
        log(f"pytest tests/test_gpu.py (at most {left - 10:.0f}s)")
        report["tests"] = run_tests(left - 10, out)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print_table(report)
    bad = [c for c in (report.get("tests") or {}).get("cases", []) if c["result"] in ("FAIL", "ERROR")]
    return 1 if bad or not isinstance(report["fit"], dict) else 0


if __name__ == "__main__":
    sys.exit(main())
