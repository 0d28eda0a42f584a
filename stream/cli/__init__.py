"""`dfstream` command line: one entry point, one module per command, each with its parser beside its runner.

Every command's parser is built on each call, so the command modules import nothing heavy at the top: torch,
the engines and the live server load only when a command that needs them runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from stream.cli.common import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE, usage_errors

__all__ = ["EXIT_INPUT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

# The modules under stream.cli, in the order --help lists them. Imported by build_parser, not here, so that
# `python -m stream.cli.alerts` does not find itself already imported by its package.
COMMANDS = ("scan", "eval", "calibrate", "baseline", "serve", "cluster", "train", "explain", "kb", "alerts", "models",
            "engines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfstream", description="Live deepfake detection.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"stream.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad input (unknown model, missing weights, bad source...) exits EXIT_USAGE in one line."""
    args = build_parser().parse_args(argv)  # argparse itself exits 2 on usage errors
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not isinstance(exc, usage_errors()):
            raise
        print(f"dfstream {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
