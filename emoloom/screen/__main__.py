"""`python -m emoloom.screen [SCREEN.yaml] [key=value ...] [--dry-run] [--resume] [--rerun]`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emoloom.config import ConfigError


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m emoloom.screen",
        description="Screen base models and training recipes: Ray Tune + Optuna + ASHA over LoRA SFT "
                    "runs, KV-off evaluation, everything logged to MLflow. With no arguments it runs the "
                    "embedded default (built-in tiny models on synthetic corpora, local Ray, sqlite MLflow).")
    p.add_argument("items", nargs="*", metavar="SCREEN.yaml | key=value",
                   help="an optional screen config file, then dotted overrides (e.g. space=regularizers)")
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
    from emoloom.screen.trial import build_train_config, train_keys

    args = parse_args(sys.argv[1:] if argv is None else argv)
    path = None
    overrides = list(args.items)
    if overrides and "=" not in overrides[0]:
        path = overrides.pop(0)
    try:
        cfg = load_config(ScreenConfig, path, overrides, base=DEFAULT_SCREEN)
        space = load_space(cfg.space)
        check_keys(space, train_keys(), str(cfg.space))
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
    digest = screen_hash(cfg, space)
    if args.dry_run:
        plan = dry_run(cfg, space, digest)
        print(json.dumps(plan, indent=2, default=str))
        for line in plan["evaluation_sample"]["warnings"]:
            print(f"warning: evaluation sample: {line}", file=sys.stderr)
        return 0
    from emoloom.screen.run import run_screen

    summary = run_screen(cfg, space, resume=args.resume, rerun=args.rerun)
    print_summary(summary)
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
    uri = summary["tracking_uri"]
    if uri.startswith(("http://", "https://")):
        print(f"Open in MLflow: {uri}/#/experiments/{summary['experiment_id']}/runs/{summary['parent_run_id']}")
    else:
        print(f"Open in MLflow: mlflow ui --backend-store-uri {uri}   (then http://127.0.0.1:5000, "
              f"experiment id {summary['experiment_id']}, screen run {summary['parent_run_id']})")


if __name__ == "__main__":
    sys.exit(main())
