"""The ``xrlkit`` command line: explainable-RL studies of Atari agents.

Each subcommand lives in its own module of
:mod:`xrlkit.commands` and exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments, returning an exit code)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import xrlkit
import xrlkit.commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xrlkit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"xrlkit {xrlkit.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(xrlkit.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"xrlkit.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.from_command_line = argv is None  # a process of its own, which may re-execute itself
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"xrlkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # also xrlkit.runlog.TrainingInterrupted, which says what was kept
        print(f"xrlkit {args.command}: interrupted" + (f": {stop}" if str(stop) else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
