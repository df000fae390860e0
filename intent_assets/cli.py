"""`intent`: the project's command line.

Each subcommand lives with its domain and registers itself through a `register(subparsers)`
function listed in COMMANDS; importing is deferred so `intent --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = (
    "intent_assets.commands:register",
    "intent_assets.ingest.rees46:register",
    "intent_assets.ingest.import_events:register",
    "intent_assets.training.cli:register",
    "serving.cli:register",
    "intent_assets.streaming.cli:register",
    "intent_assets.stack_cli:register",
)


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intent", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for spec in COMMANDS:
        module, func = spec.split(":")
        getattr(importlib.import_module(module), func)(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
