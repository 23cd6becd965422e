"""`python -m emoloom evaluate` / `predict` end to end (subprocess), and bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("EMOLOOM_CACHE", tempfile.mkdtemp(prefix="emoloom-test-cache-"))

REPO = Path(__file__).resolve().parents[1]
PY = REPO / ".venv" / "bin" / "python"


def _env() -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    return env


def _run(args, stdin=None, timeout=300):
    python = str(PY) if PY.exists() else sys.executable
    return subprocess.run([python, "-m", "emoloom", *args], input=stdin, capture_output=True, text=True,
                          env=_env(), cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A LoRA adapter saved with peft (random B, so it changes the outputs)."""
    from peft import LoraConfig, get_peft_model

    from emoloom.models import load_base, lora_targets

    base = load_base("tiny-qwen2")
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=lora_targets("qwen2"), init_lora_weights=False,
                     task_type="CAUSAL_LM")
    out = tmp_path_factory.mktemp("adapter")
    get_peft_model(base.model, cfg).save_pretrained(out)
    return out


def test_evaluate_cli_writes_predictions_and_metrics(tmp_path, adapter):
    from emoloom.data import write_synthetic

    write_synthetic(tmp_path / "syn", seed=0, size=30)
    out = tmp_path / "eval"
    proc = _run(["evaluate", "--model", "tiny-qwen2", "--adapter", str(adapter), "--corpus", "synthetic",
                 "--source", str(tmp_path / "syn"), "--split", "dev", "--taxonomy", "goemotions",
                 "--out", str(out), "--limit", "5", "--max-new-tokens", "8", "--bootstrap", "20"])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["records"] == 5 and summary["parse_ok_rate"] == 0.0  # random init: no JSON
    assert "evaluate" in proc.stderr  # the tqdm bar goes to stderr

    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        for key in ("id", "prompt_sha256", "raw", "parse_ok", "labels", "vad", "rationale", "error", "truncated",
                    "gold_labels", "gold_vad", "stop", "forwards"):
            assert key in row, key
        assert len(row["prompt_sha256"]) == 64 and row["stop"] == "max_new_tokens"
        assert row["error"] in ("no_json", "unbalanced")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["adapter"]["sha256"] and len(metrics["adapter"]["sha256"]) == 64
    assert metrics["model"]["id"] == "tiny-qwen2" and metrics["model"]["revision"]
    assert list(metrics["data"]["sha256"]) == [str(tmp_path / "syn" / "goemotions" / "dev.tsv")]
    assert set(metrics["versions"]) >= {"torch", "transformers", "peft", "ray", "emoloom"}
    assert metrics["decoder"] == "fast" and metrics["seed"] == 0
    # 8 new tokens per row; drafts (rows feed each other's) can only save forwards
    assert metrics["forwards_per_example"] == pytest.approx(sum(r["forwards"] for r in rows) / 5)
    assert 1 <= metrics["forwards_per_example"] <= 8
    assert metrics["wall_time_s"] > 0 and len(metrics["config_hash"]) == 16
    assert metrics["metrics"]["all"]["parse_ok_rate"] == 0.0
    assert "synthetic/dev" in metrics["metrics"]["groups"]


def test_predict_cli_reads_stdin(tmp_path):
    lines = [json.dumps({"id": "a", "text": "i am so happy about the wedding !"}),
             json.dumps({"id": "b", "text": ""}),
             "not json",
             json.dumps({"id": "c", "text": "x", "labels": ["not-a-label"]})]
    proc = _run(["predict", "--model", "tiny-qwen2", "--decoder", "constrained", "--max-new-tokens", "48"],
                stdin="\n".join(lines) + "\n")
    assert proc.returncode == 1  # malformed lines are reported, good ones still predicted
    assert "<stdin>:3:" in proc.stderr and "<stdin>:4:" in proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["id"] for o in out] == ["a", "b"]
    assert all(o["parse_ok"] for o in out)  # constrained decoding


def test_unknown_gold_labels_are_reported_with_file_and_line(tmp_path, capsys):
    from emoloom.__main__ import main

    src = tmp_path / "records.jsonl"
    src.write_text("\n".join([
        json.dumps({"id": "1", "text": "so happy", "labels": ["joy"]}),
        json.dumps({"id": "2", "text": "what", "labels": ["happyness"]}),
        json.dumps({"id": "3", "text": "so sad", "labels": ["sadness"], "vad": {"v": 0.1, "a": 0.3, "d": 0.2},
                    "vad_source": "gold"}),
    ]) + "\n")
    code = main(["evaluate", "--model", "tiny-qwen2", "--corpus", "jsonl", "--source", str(src), "--out",
                 str(tmp_path / "out"), "--max-new-tokens", "4", "--bootstrap", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0
    assert f"{src}:2:" in err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["data"]["records"] == 2 and metrics["data"]["skipped"][0].startswith(f"{src}:2:")


def test_predict_skips_lone_surrogate_record_and_predicts_the_rest(capsys):
    import io

    from emoloom.__main__ import build_parser
    from emoloom.eval.cli import run_predict

    args = build_parser("predict").parse_args(["predict", "--model", "tiny-qwen2", "--max-new-tokens", "4"])
    lines = [json.dumps({"id": "a", "text": "so happy"}),
             json.dumps({"id": "b", "text": "bad \ud800 text"}),  # JSON carries it as the escape \ud800
             json.dumps({"id": "c", "text": "so sad", "context": ["fine", "\udc00"]}),
             json.dumps({"id": "d", "text": "so sad"})]
    out, err = io.StringIO(), io.StringIO()
    assert run_predict(args, io.StringIO("\n".join(lines) + "\n"), out, err) == 1
    assert [json.loads(line)["id"] for line in out.getvalue().splitlines()] == ["a", "d"]
    assert err.getvalue().splitlines() == [
        "<stdin>:2: invalid record: text: lone surrogate U+D800 at character 4 (not valid Unicode text)",
        "<stdin>:3: invalid record: context: turn 1: lone surrogate U+DC00 at character 0 (not valid Unicode text)",
    ]


def test_evaluate_limit_zero_means_zero_and_negative_is_rejected(tmp_path, capsys):
    from emoloom.__main__ import main

    src = tmp_path / "dev.tsv"
    src.write_text("so happy\t17\ta1\nso sad\t25\ta2\n", encoding="utf-8")
    base = ["evaluate", "--model", "tiny-qwen2", "--corpus", "goemotions", "--source", str(src),
            "--out", str(tmp_path / "out"), "--max-new-tokens", "4", "--bootstrap", "0", "--no-progress"]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--limit", "-1"])
    assert exc.value.code == 2 and "--limit: must be >= 0 (0 reads no records), got -1" in capsys.readouterr().err
    assert main([*base, "--limit", "0"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["records"] == 0
    assert (tmp_path / "out" / "predictions.jsonl").read_text() == ""
