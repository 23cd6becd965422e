"""The winner as an MLflow model: logged into its run, registered once, loaded in a fresh process
from `models:/emoloom-best@best`, and served by `mlflow models serve` on 127.0.0.1."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from emoloom import tracking

pytestmark = pytest.mark.slow

RECORDS = [{"id": "1", "text": "I finally passed my exam!", "taxonomy": "goemotions"},
           {"id": "2", "text": "My dog died today.", "taxonomy": "ekman"}]


def trial_run(tmp_path):
    """A finished run shaped like a screen trial's: artifacts `adapter/` and `config.yaml`
    (a LoRA adapter on a built-in tiny model; untrained: the constrained decoder still answers)."""
    from peft import LoraConfig, get_peft_model

    from emoloom.models import load_base, lora_targets

    loaded = load_base("tiny-qwen2")
    peft_model = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=lora_targets("qwen2")))
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "tiny-qwen2", "seed": 0}}))
    uri = tracking.default_tracking_uri(tmp_path / "runs")
    tracking.check_reachable(uri)
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(c, "emoloom-screen", tmp_path / "runs" / "mlartifacts")
    run = c.create_run(exp, run_name="tiny-qwen2 lr=3e-3 #00001")
    tracking.log_files(c, run.info.run_id, [tmp_path / "adapter", tmp_path / "config.yaml"])
    c.set_terminated(run.info.run_id)
    return uri, c, run.info.run_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_best_candidate_loads_in_a_fresh_process_and_serves(tmp_path):
    from emoloom.serve import log_candidate

    uri, c, run_id = trial_run(tmp_path)
    decoder = {"name": "constrained", "max_new_tokens": 64, "batch_size": 4}
    versions = {tracking.register_best(c, run_id, "emoloom-best", artifact=log_candidate(c, run_id, decoder))
                for _ in range(2)}
    assert versions == {"1"}  # one version per best run, however often it is registered
    assert len(c.search_model_versions("name = 'emoloom-best'")) == 1

    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "EMOLOOM_CACHE": str(tmp_path / "fresh-cache")}
    code = ("import json, mlflow.pyfunc; m = mlflow.pyfunc.load_model('models:/emoloom-best@best'); "
            f"print(m.predict({RECORDS!r}).to_json(orient='records'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [a["id"] for a in answers] == ["1", "2"]
    assert all(a["parse_ok"] and a["labels"] and set(a["vad"]) == {"v", "a", "d"} for a in answers), answers
    from emoloom.labels import TAXONOMIES

    assert set(answers[1]["labels"]) <= set(TAXONOMIES["ekman"])

    port = free_port()
    # the scoring server starts `uvicorn` from PATH: the venv's bin/, as in an activated venv
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/emoloom-best@best",
                               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True, cwd=tmp_path)
    try:
        import requests

        deadline, reply = time.time() + 240, None
        while time.time() < deadline and server.poll() is None:
            try:
                reply = requests.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": RECORDS[:1]},
                                      timeout=120)
                break
            except requests.ConnectionError:
                time.sleep(1)
        assert reply is not None, server.stdout.read()[-3000:] if server.poll() is not None else "no answer in time"
        assert reply.status_code == 200, reply.text
        predictions = reply.json()["predictions"]
        assert len(predictions) == 1 and predictions[0]["parse_ok"] and predictions[0]["id"] == "1"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
