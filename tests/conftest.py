"""Shared fixtures. `shared_data`: the licensed real datasets (read only, never copied here)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emoloom import tracking

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA_DEFAULT = REPO.parent / "shared" / "data"

# The suite runs offline and hermetic: no hub, no telemetry, and built-in models/tokenizers are
# built into a cache private to this test session (subprocesses inherit it).
for _key, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                     "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true",
                     "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_key, _value)
if "EMOLOOM_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["EMOLOOM_CACHE"] = tempfile.mkdtemp(prefix="emoloom-test-cache-")
    atexit.register(shutil.rmtree, os.environ["EMOLOOM_CACHE"], True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real corpora (see its README.md); EMOLOOM_SHARED_DATA overrides the default
    `<checkout>/../shared/data`. Tests that use it are skipped when it is absent."""
    path = Path(os.environ.get("EMOLOOM_SHARED_DATA") or SHARED_DATA_DEFAULT)
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set EMOLOOM_SHARED_DATA to the shared/data folder)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 in its own process group; start() again after stop()
    brings the same store back on the same port (an outage and its end)."""

    def __init__(self, tmp_path):
        self.tmp, self.port, self.proc = tmp_path, _free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self):
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.tmp / 'srv.db'}",
             "--artifacts-destination", str(self.tmp / "art")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.time() + 120
        while True:
            try:
                tracking.check_reachable(self.uri, timeout_s=2)
                return self
            except RuntimeError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(1)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a loaded machine: do not let shutdown fail a test
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


@pytest.fixture()
def mlflow_server(tmp_path):
    """A started MlflowServer, stopped after the test."""
    srv = MlflowServer(tmp_path).start()
    yield srv
    srv.stop()
