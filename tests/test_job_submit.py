"""README.md's `ray job submit` lines, run as written on a local head, from a copy of the checkout.

What the test adds to the README's block, and why:
* `ray start` gets free ports and a temp dir of its own, so it never meets another Ray on the
  machine (a user's cluster, the suite's own), and runs in a session of its own, so the test can
  stop exactly that cluster: the README's `ray stop` would stop every Ray of this user.
* `ray job submit` gets `RAY_ADDRESS` (the dashboard's free port) and three overrides that make the
  embedded default screen smaller (2 trials of 20 steps an epoch); the line itself is the README's.
* HOME is a temporary folder, so `ray get-auth-token --generate` writes a token of its own.
"""
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from emoloom import tracking
from conftest import REPO, _free_port

SMALLER = "space.num_trials=2 space.max_concurrent=2 space.fixed.steps_per_epoch=20"


def readme_block(marker: str) -> list[str]:
    """The commands of README.md's fenced bash block that contains `marker` (comments dropped)."""
    text = (REPO / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        if marker in block:
            return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    raise AssertionError(f"README.md has no bash block with {marker!r}")


def checkout_copy(dest: Path) -> Path:
    """The files git would commit (tracked, and new ones not ignored), plus a link to the venv."""
    names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, names):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


def stop_session(sid: int) -> None:
    """Stop every process of the session the head was started in (its GCS, raylet, agents and
    workers), and nothing else."""
    def members():
        out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
        return [int(p) for p, s in (line.split() for line in out.splitlines()) if int(s) == sid]

    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        for pid in members():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while members() and time.time() < deadline:
            time.sleep(0.5)
    assert not members(), f"processes of the head's session {sid} are still running"


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "ray").exists(), reason="needs the project's .venv (make setup)")
def test_the_readme_ray_job_submit_lines_run_a_screen_on_a_local_head():
    lines = readme_block("ray get-auth-token")
    assert [line.split()[0] for line in lines] == [".venv/bin/ray", "export", "ray", "ray", "ray"]
    start, submit = lines[2], lines[3]
    assert start.startswith("ray start --head") and submit.startswith("ray job submit") and lines[4] == "ray stop"

    # Unix socket paths must stay short: Ray's session folder goes under a short temp dir.
    tmp = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))
    repo = checkout_copy(tmp / "repo")
    (tmp / "home").mkdir()
    gcs, dashboard, client, agent = (_free_port() for _ in range(4))
    script = "\n".join([
        "set -e",
        lines[0],
        lines[1],
        f"{start} --port={gcs} --dashboard-port={dashboard} --ray-client-server-port={client} "
        f"--dashboard-agent-listen-port={agent} --temp-dir={shlex.quote(str(tmp / 'ray'))}",
        f"export RAY_ADDRESS=http://127.0.0.1:{dashboard}",
        f"{submit} {SMALLER}",
    ])
    env = {**os.environ, "HOME": str(tmp / "home")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(["bash", "-c", script], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out[-4000:]
        assert re.search(r"Job 'raysubmit_\w+' succeeded", out), out[-4000:]
        assert "Best candidate: trial" in out and "ModuleNotFoundError" not in out

        # The job wrote to the absolute storage the README names: the screen's runs are in MLflow.
        c = tracking.client(tracking.default_tracking_uri(repo / "runs"))
        exp = c.get_experiment_by_name("emoloom-screen")
        runs = c.search_runs([exp.experiment_id])
        roles = sorted(r.data.tags.get(tracking.ROLE_TAG) for r in runs)
        assert roles.count("screen") == 1 and roles.count("trial") == 2, roles
        assert all(r.info.status == "FINISHED" for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "trial")
        assert c.get_model_version_by_alias("emoloom-best", "best").run_id in {r.info.run_id for r in runs}
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_session(proc.pid)
        shutil.rmtree(tmp, ignore_errors=True)
