"""`python -m emoloom SUBCOMMAND ...`: a thin dispatcher; each subcommand lives with its concept."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module exposing register(subparsers); imported only when listed in argv/help,
# so `python -m emoloom --help` stays fast (heavy libraries load inside the commands).
SUBCOMMANDS = {
    "parse": "emoloom.parse_cli",
    "data": "emoloom.data.cli",
    "train": "emoloom.train.cli",
    "evaluate": "emoloom.eval.cli",
    "predict": "emoloom.eval.cli",
    "report": "emoloom.screen.verdict",
    "fidelity": "emoloom.screen.fidelity",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emoloom",
        description="EmoLoom: screen small LMs for emotion classification + VAD under one JSON contract.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered: set[str] = set()
    for name, module_name in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        if module_name in registered:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # not built yet in this checkout
            raise
        module.register(sub)
        registered.add(module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
