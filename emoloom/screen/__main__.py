"""`python -m emoloom.screen [PRESET | SCREEN.yaml] [key=value ...] [--dry-run] [--resume] [--rerun]`."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from emoloom.config import ConfigError


def _epilog() -> str:
    from emoloom.screen.presets import presets
    from emoloom.screen.space import SPACES_DIR

    spaces = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
    return f"""\
presets (screens/*.yaml):   {', '.join(presets())}
search spaces (space=NAME): {spaces}

overrides: dotted key=value, the value read as YAML; screen keys as in emoloom/screen/config.py,
search-space keys after `space.` (fixed/params take the rest as one training key), e.g.
  python -m emoloom.screen goemotions space.num_trials=2 space.max_concurrent=1 --dry-run
  python -m emoloom.screen space=regularizers eval.dev_limit=200 train.optim.batch_size=8 space.fixed.epochs=1
Relative paths (data, lexicon) are read from the directory the command starts in; ${{VAR:-default}}
is expanded (the goemotions preset reads ${{EMOLOOM_DATA:-../shared/data}}).

results: <storage>/<name>-<hash>/ (storage=runs by default): report/leaderboard.md, ledger.json,
summary.json, trials/*/journal.json; MLflow in <storage>/mlflow.db (or mlflow.tracking_uri=),
best candidate registered as model emoloom-best@best; the last lines print the `mlflow ui` command.
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m emoloom.screen",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_epilog(),
        description="Screen base models and training recipes: Ray Tune + Optuna + ASHA over LoRA SFT "
                    "runs, KV-off evaluation, everything logged to MLflow. With no arguments it runs the "
                    "embedded default (built-in tiny models on synthetic corpora, local Ray, sqlite MLflow).")
    p.add_argument("items", nargs="*", metavar="PRESET | SCREEN.yaml | key=value",
                   help="an optional preset name or screen config file, then dotted overrides "
                        "(e.g. space=regularizers, space.num_trials=2)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config, its hash, the search space and the resource plan; start nothing")
    p.add_argument("--resume", action="store_true",
                   help="require an interrupted screen with the same config hash and continue it "
                        "(rerunning the same config resumes it too)")
    p.add_argument("--rerun", action="store_true",
                   help="run a FINISHED screen again from scratch; its old results move aside "
                        "(without it, rerunning a finished screen only reports it and leaves it as it is)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from emoloom.screen.config import ScreenConfig, check_resolvable
    from emoloom.screen.defaults import DEFAULT_SCREEN
    from emoloom.screen.run import dry_run, screen_hash
    from emoloom.screen.space import check_keys, load_space
    from emoloom.config import load_config
    from emoloom.screen.presets import (apply_space_overrides, check_top_keys, resolve_paths, resolve_screen,
                                        split_space_overrides)
    from emoloom.screen.trial import build_train_config, train_keys

    args = parse_args(sys.argv[1:] if argv is None else argv)
    path = None
    overrides = list(args.items)
    try:
        if overrides and "=" not in overrides[0]:
            path = resolve_screen(overrides.pop(0))
        space_overrides, overrides = split_space_overrides(overrides)
        check_top_keys(overrides)
        cfg = load_config(ScreenConfig, path, overrides, base=DEFAULT_SCREEN)
        space = apply_space_overrides(load_space(cfg.space), space_overrides, str(cfg.space))
        check_keys(space, train_keys(), str(cfg.space))
        # identity on the expanded paths as written (presets.resolve_paths says why), then absolute
        # paths: trials run in working directories of their own
        digest = screen_hash(*resolve_paths(cfg, space, absolute=False))
        cfg, space = resolve_paths(cfg, space)
        try:  # the screen's `train:` section plus the space's fixed values
            train_cfg = build_train_config(cfg.train, space.fixed, {}, Path(cfg.storage), cfg.seed)
        except ConfigError as exc:
            raise ConfigError(f"{path or 'screen config'}: train: section + {cfg.space} fixed: {exc}") from None
        # model names and local paths, before --dry-run prints a plan
        for warning in check_resolvable(cfg, space, train_cfg, path or "screen config", dry_run=args.dry_run):
            print(f"warning: {warning}", file=sys.stderr)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        plan = dry_run(cfg, space, digest)
        print(json.dumps(plan, indent=2, default=str))
        for line in plan["evaluation_sample"]["warnings"]:
            print(f"warning: evaluation sample: {line}", file=sys.stderr)
        return 0
    from emoloom.screen.run import run_screen

    summary = run_screen(cfg, space, resume=args.resume, rerun=args.rerun, digest=digest)
    if cfg.fidelity is None:
        import ray

        # Trials' last log lines reach the driver late; leaving Ray first keeps them from
        # trailing after the summary (they are in each trial's log either way).
        ray.shutdown()
    print_summary(summary)
    if cfg.fidelity is not None and summary.get("best"):
        from emoloom.screen.fidelity import audit

        # after the screen's summary, so a killed audit resumes with the same command (a finished
        # screen is revisited, then the audit picks up its own Tune experiment)
        result = audit(cfg, space, Path(summary["storage"]), cfg.fidelity, screen_wall_s=summary["wall_s"])
        print(f"\nFidelity audit: {result['paragraph']}")
    return 0 if summary.get("best") else 1


def print_summary(summary: dict) -> None:
    from pathlib import Path

    report = Path(summary["report_dir"]) / "leaderboard.md"
    print("\nLeaderboard")
    print(report.read_text() if report.exists() else "(no trials)")
    best = summary.get("best")
    if best:
        print(f"Best candidate: trial {best['trial']} ({best['model']}), objective {best['objective']:.4f}, "
              f"MLflow run {best['run_id']}")
    else:
        print("No trial finished: see the leaderboard notes and the Tune log above.")
    print(f"Trials: {summary['trials']} ({summary['failed']} failed, {summary['stopped_early']} stopped early by ASHA); "
          f"wall time {summary['wall_s']} s" + (f", finished at {summary['finished_at']} (already finished; "
                                                 f"left as it was)" if summary.get("already_finished") else ""))
    if summary.get("pending_tracking"):
        print(f"MLflow did not take everything: {summary['pending_tracking']} run(s) are kept in their journals under "
              f"{summary['storage']}; run the same command again when MLflow answers to replay them.")
    uri, exp = summary["tracking_uri"], summary["experiment_id"]
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
    else:
        base = "http://127.0.0.1:5000"
        # quoted: a storage path with a space (or any shell character) must paste as one argument
        print(f"Open in MLflow: {shlex.quote(mlflow_command())} ui --backend-store-uri {shlex.quote(uri)} "
              f"--host 127.0.0.1 --port 5000")
    print(f"Runs of the screen: {base}/#/experiments/{exp}/runs   (screen run: {base}/#/experiments/{exp}/runs/"
          f"{summary['parent_run_id']})")


def mlflow_command() -> str:
    """The `mlflow` of this interpreter's environment (a venv's bin/ is usually not on PATH),
    relative to the working directory when it lies below it: `.venv/bin/mlflow`."""
    import os
    import shutil

    exe = Path(sys.executable).parent / "mlflow"
    if not exe.exists():
        return shutil.which("mlflow") or "mlflow"
    if shutil.which("mlflow") == str(exe):
        return "mlflow"
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return os.fspath(exe)


if __name__ == "__main__":
    sys.exit(main())
