"""The `sparsec` command line.

Each sub-command lives in its own module under `sparsec/commands/` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit status). New commands add a
module and a line to COMMANDS; nothing else here changes.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from sparsec import __version__
from sparsec.errors import SparsecError

# Order is the order shown by `sparsec --help`.
COMMANDS = [
    "sparsec.commands.formats",
    "sparsec.commands.inspect",
    "sparsec.commands.compile",
    "sparsec.commands.run",
    "sparsec.commands.calibrate",
    "sparsec.commands.autotune",
    "sparsec.commands.simulate",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparsec",
        description="sparsec: a sparse deep-learning compiler and sparse-accelerator simulator.",
    )
    parser.add_argument("--version", action="version", version=f"sparsec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except SparsecError as exc:
        print(f"sparsec: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sparsec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
