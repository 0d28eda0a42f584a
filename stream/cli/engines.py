"""`dfstream engines build`: export, quantise or build a model for a backend ahead of time, into the engine cache,
so that the first `scan` or `serve` on it starts at once."""

from __future__ import annotations

import argparse
from typing import Any

from stream.cli.common import EXIT_OK, add_backend_args, add_device, add_offline, add_weights, add_weights_dir, \
    prepared


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("engines", help="build converted engines ahead of time")
    actions = p.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="export / quantise / build a model for a backend")
    build.add_argument("name", metavar="NAME")
    add_weights_dir(build)
    add_weights(build)
    add_offline(build)
    add_device(build)
    add_backend_args(build, default_backend="onnx")
    build.set_defaults(run=run_build)
    return p


def run(args: argparse.Namespace) -> int:
    return run_build(args)


def run_build(args: argparse.Namespace) -> int:
    if args.backend == "auto":
        raise ValueError("engines build needs a concrete --backend: onnx or tensorrt")
    engine = prepared(args.name, args, args.weights)
    print(f"{args.name}: {args.backend} {args.precision} -> {getattr(engine, 'path', 'in memory')}")
    return EXIT_OK
