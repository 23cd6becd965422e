"""Does the MLflow UI tell a finished screen's story? Starts `mlflow ui` on 127.0.0.1 for a
finished screen, opens the experiment's runs page and the screen run's page in headless chromium,
saves screenshots and checks what a person sees there (the DOM after the page's scripts ran).

    .venv/bin/python bench/ui_check.py                       # the newest finished screen in runs/
    .venv/bin/python bench/ui_check.py runs/goemotions-<hash> --out runs/ui_check

Needs `chromium` (Debian: apt-get install -y chromium). Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def newest_screen(storage: Path) -> Path:
    done = sorted((p.parent for p in storage.glob("*/summary.json")), key=lambda p: p.stat().st_mtime)
    if not done:
        raise SystemExit(f"no finished screen under {storage} (run python -m emoloom.screen first)")
    return done[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(uri: str, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).parent / "mlflow"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    import requests

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"mlflow ui exited with status {proc.returncode}")
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit("mlflow ui did not answer within 120 s")


def browse(url: str, png: Path, budget_ms: int = 20000) -> str:
    """Screenshot and rendered DOM text of one page."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise SystemExit("chromium not found (Debian: apt-get install -y chromium)")
    common = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1600,1000", f"--virtual-time-budget={budget_ms}"]
    subprocess.run([*common, f"--screenshot={png}", url], capture_output=True, timeout=180)
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    import re

    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", text).split())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("screen", nargs="?", help="a finished screen's folder (default: the newest in --storage)")
    p.add_argument("--storage", default="runs")
    p.add_argument("--out", default="runs/ui_check", help="folder for the screenshots")
    args = p.parse_args(argv)
    folder = Path(args.screen) if args.screen else newest_screen(Path(args.storage))
    summary = json.loads((folder / "summary.json").read_text())
    journals = [json.loads(j.read_text()) for j in sorted((folder / "trials").glob("trial_*/journal.json"))]
    names = [j["run_name"] for j in journals]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ui = start_ui(summary["tracking_uri"], port)
    base = f"http://127.0.0.1:{port}/#/experiments/{summary['experiment_id']}"
    try:
        runs = browse(f"{base}/runs", out / "runs.png")
        # trial runs are nested (collapsed) under the screen's run on the runs page: open the best's page
        best = browse(f"{base}/runs/{summary['best']['run_id']}", out / "best_trial.png") if summary.get("best") else ""
        parent = browse(f"{base}/runs/{summary['parent_run_id']}", out / "screen_run.png")
        stopped_id = next((j["run_id"] for j in journals if j["view"]["tags"].get("emoloom.status") == "STOPPED"), None)
        stopped = browse(f"{base}/runs/{stopped_id}", out / "stopped_trial.png") if stopped_id else None
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    best_name = next((json.loads(j.read_text())["run_name"] for j in (folder / "trials").glob("trial_*/journal.json")
                      if summary.get("best") and json.loads(j.read_text())["run_id"] == summary["best"]["run_id"]), "")
    first_sentence = (summary.get("verdict") or {}).get("sentences", [""])[0][:40]
    checks = [
        ("experiment opens on its training runs (not traces)", "Training runs" in runs, ""),
        ("runs page lists the screen run", summary["screen"][:20] in runs, summary["screen"]),
        ("runs page counts the screen, its trials and floors", f"{len(names) + 3} matching runs" in runs,
         f"{len(names)} trials + 2 floors + the screen"),
        ("best trial's page is titled by model and searched values", bool(best_name) and best_name in best,
         repr(best_name)),
        ("screen run shows the leaderboard in its Description", "rank" in parent and "objective" in parent, ""),
        ("screen run shows the verdict", bool(first_sentence) and first_sentence in parent, first_sentence),
    ]
    if stopped is not None:  # MLflow's run page says "Killed" / "Failed" for runs ended that way
        checks.append(("a trial ASHA stopped looks finished, not killed or failed, and says why",
                       "Finished" in stopped and "Killed" not in stopped and "Failed" not in stopped
                       and "stopped early by ASHA" in stopped, ""))
    from emoloom import tracking

    c = tracking.client(summary["tracking_uri"])
    keys = {k for r in c.search_runs([summary["experiment_id"]], max_results=1000) for k in r.data.metrics}
    checks.append(("no metric named `step` (the compare view's default axis)", "step" not in keys, ""))
    for name, ok, detail in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail else ""))
    print(f"screenshots: {', '.join(str(p) for p in sorted(out.glob('*.png')))}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
