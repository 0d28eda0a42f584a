"""`dfstream models list | pull`: what the registry knows, which weights are here and intact, and fetching them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stream.cli.common import EXIT_OK, add_weights_dir, print_table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("models", help="list the known models or download their weights")
    actions = p.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list", help="name, card or paper, trained-on data, licence, input, hash status, weights here, backends")
    add_weights_dir(listing)
    listing.add_argument("--json", action="store_true", help="print the rows as JSON")
    listing.set_defaults(run=run_list)
    pull = actions.add_parser("pull", help="download and verify a model's weights")
    pull.add_argument("names", nargs="+", metavar="NAME")
    add_weights_dir(pull)
    pull.set_defaults(run=run_pull)
    return p


def run(args: argparse.Namespace) -> int:
    return {"list": run_list, "pull": run_pull}[args.action](args)


def run_list(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from engines.registry import MODELS, VOICE_MODELS, model_card, model_files
    from engines.weights import default_weights_dir

    folder = args.weights_dir or default_weights_dir()
    rows = []
    for name in [*MODELS, *VOICE_MODELS]:
        row = model_card(name)
        row["here"] = _presence(folder, model_files(name))
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = Table(title=f"dfstream models (weights in {folder})", show_lines=True)
    columns = ("name", "card / paper", "trained on", "licence", "input", "hash", "here", "backends")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(row[col] for col in columns))
    print_table(table)
    return EXIT_OK


def _presence(folder: Path, files: dict) -> str:
    """'yes' / 'no' / 'partial', and MISMATCH for a present file whose digest is not the pinned one."""
    from engines.weights import ChecksumMismatch, verify

    here, bad = [], []
    for role, source in files.items():
        path = folder / source.filename
        if not path.exists():
            continue
        here.append(role)
        if source.sha256 or getattr(source, "md5", None):
            try:
                verify(path, source.sha256, getattr(source, "md5", None))
            except ChecksumMismatch:
                bad.append(role)
    if bad:
        return "MISMATCH: " + ", ".join(bad)
    if not here:
        return "no"
    return "yes" if len(here) == len(files) else "partial: " + ", ".join(here)


def run_pull(args: argparse.Namespace) -> int:
    from engines.registry import model_files, pull

    for name in args.names:
        model_files(name)  # an unknown name is refused before anything downloads
    for name in args.names:
        for role, path in pull(name, args.weights_dir).items():
            print(f"{name} {role}: {path}")
    return EXIT_OK
