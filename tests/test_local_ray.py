"""The screen's local Ray listens on the loopback interface only (emoloom/local_ray.py).

One Ray is started in a child process (its own session, so everything it starts can be found and
stopped), runs a task, an actor and a one-trial Tune run, and waits; the test then lists the
listening sockets of that process tree with psutil and asserts that none is bound beyond
loopback. (Not checked by connecting to the machine's network address: on a shared machine
another Ray may listen there on the same fixed ports, e.g. the dashboard agent's 52365.)"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys
import ray  # imported BEFORE local_ray_options(): what happens when other modules import Ray first
from emoloom.local_ray import local_ray_options

ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
         _temp_dir=sys.argv[1], **local_ray_options())

@ray.remote
def node_ip():
    return ray.util.get_node_ip_address()

@ray.remote
class Echo:
    def ping(self):
        return os.getpid()

from ray import tune

def trainable(config):
    tune.report({"score": config["x"] * 2})

result = tune.Tuner(trainable, param_space={"x": 3},
                    run_config=tune.RunConfig(storage_path=sys.argv[2], verbose=0)).fit()
actor = Echo.remote()
print("READY", json.dumps({"node_ip": ray.get(node_ip.remote()), "actor_pid": ray.get(actor.ping.remote()),
                  "score": result.get_best_result("score", "max").metrics["score"]}), flush=True)
sys.stdin.readline()  # the test inspects the sockets now
ray.shutdown()
"""


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def _listeners(root: int) -> list[tuple[str, str, int]]:
    """(process name, ip, port) of every listening TCP socket of `root` and its descendants."""
    out = []
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            conns = p.net_connections(kind="inet")
            name = p.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the child's whole session: the driver and every Ray process it started."""
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + wait_s
        while time.time() < deadline:
            if not [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == proc.pid]:
                return
            time.sleep(0.2)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


@pytest.mark.timeout(180)  # about 20 s on 2 busy cores; a hung child must not hold the suite for long
def test_local_ray_listens_on_loopback_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # local_ray_options() must set it itself
    env.update(PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    # Ray's socket paths must stay under 108 bytes: pytest's tmp_path is too deep
    temp_dir = Path(tempfile.mkdtemp(prefix="emoloom-ray-"))
    log = tmp_path / "child.log"  # a file, not a pipe: Ray's warnings must not fill a pipe nobody reads
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(temp_dir), str(tmp_path / "tune")],
                                cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, text=True, start_new_session=True)
    try:
        line = ""
        while not line.startswith("READY "):  # Tune prints to stdout too
            line = proc.stdout.readline()  # blocks until the child is ready (or dies)
            assert line, f"the child exited ({proc.wait(30)}):\n{log.read_text()[-4000:]}"
        ready = json.loads(line.removeprefix("READY "))
        assert ready["score"] == 6
        assert ready["node_ip"] == "127.0.0.1"

        listeners = _listeners(proc.pid)
        names = {name for name, _, _ in listeners}
        # gcs_server and raylet listen on all interfaces without the options: they must be among those checked
        assert {"gcs_server", "raylet"} <= names, listeners
        assert len(listeners) >= 6, listeners
        exposed = [entry for entry in listeners if not _is_loopback(entry[1])]
        assert not exposed, f"Ray listens beyond loopback: {exposed}"

        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0, log.read_text()[-4000:]
    finally:
        _stop_group(proc)
        proc.stdin.close()
        proc.stdout.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == proc.pid], "Ray processes left behind"


def test_local_ray_options_are_plain_init_kwargs():
    import inspect

    from emoloom.local_ray import LOCAL_ONLY_ENV, local_ray_options

    before = {k: os.environ.get(k) for k in LOCAL_ONLY_ENV}
    try:
        opts = local_ray_options()
        assert opts == {"_node_ip_address": "127.0.0.1", "dashboard_host": "127.0.0.1"}
        assert all(os.environ[k] == v for k, v in LOCAL_ONLY_ENV.items())
        import ray

        params = inspect.signature(ray.init).parameters
        public = {k for k in opts if not k.startswith("_")}
        assert public <= set(params), "a public option ray.init does not take"
        assert not {"include_dashboard", "num_cpus", "runtime_env", "address"} & set(opts), \
            "init_ray passes these itself: a duplicate keyword would raise"
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None and before.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") is None:
            constants.ENABLE_RAY_CLUSTER = sys.platform not in ("darwin", "win32")
