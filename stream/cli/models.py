"""`dfstream models list | pull`: what the registry knows, which weights are here and intact, and fetching them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stream.cli.common import EXIT_OK, add_weights_dir, print_table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("models", help="list the known models or download their weights")
    actions = p.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="name, card, input, weights present, sha256, backends")
    add_weights_dir(listing)
    listing.set_defaults(run=run_list)
    pull = actions.add_parser("pull", help="download and verify a model's weights")
    pull.add_argument("names", nargs="+", metavar="NAME")
    add_weights_dir(pull)
    pull.set_defaults(run=run_pull)
    return p


def run(args: argparse.Namespace) -> int:
    return {"list": run_list, "pull": run_pull}[args.action](args)


def run_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from engines.backends import available_backends
    from engines.registry import MODELS
    from engines.weights import ChecksumMismatch, default_weights_dir, verify

    def hash_status(path: Path, source) -> str:
        if source.sha256 is None and getattr(source, "md5", None) is None:
            return "no published hash"
        try:
            verify(path, source.sha256, getattr(source, "md5", None))
        except ChecksumMismatch:
            return "MISMATCH"
        return "ok"

    folder = args.weights_dir or default_weights_dir()
    backends = ", ".join(available_backends())
    table = Table(title=f"dfstream models (weights in {folder})")
    for col in ("name", "card", "architecture", "input", "weights", "present", "hash", "backends"):
        table.add_column(col)
    for entry in MODELS.values():
        path = folder / entry.weights.filename
        present = path.exists()
        s = entry.input
        table.add_row(
            entry.name, entry.card or "-", entry.architecture,
            f"{s.size}²" + (f" × {s.frames}" if s.frames > 1 else ""),
            entry.weights.filename, "yes" if present else "no",
            hash_status(path, entry.weights) if present else "-", backends,
        )
    print_table(table)
    return EXIT_OK


def run_pull(args: argparse.Namespace) -> int:
    from engines.registry import get_entry
    from engines.weights import fetch

    for name in args.names:
        entry = get_entry(name)
        for source in [entry.weights, *entry.extra_weights.values()]:
            print(f"{name}: {fetch(source, args.weights_dir)}")
    return EXIT_OK
