"""`dfstream models list | pull`: what the registry knows, which weights are here and intact, and fetching them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stream.cli.common import EXIT_OK, add_device, add_weights_dir, device, print_table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("models", help="list the known models or download their weights")
    actions = p.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list", help="name, card or paper, trained-on data, licence, input, hash status, weights here, backends, "
                     "and which model --model auto picks here")
    add_weights_dir(listing)
    add_device(listing, help="the device auto decides for (default: cuda when available, else cpu)")
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

    from engines.auto import AUTO, plan
    from engines.registry import MODELS, VOICE_MODELS, model_card, model_files
    from engines.weights import default_weights_dir

    folder = args.weights_dir or default_weights_dir()
    choice = plan(device(args), folder)
    rows = []
    for name in [*MODELS, *VOICE_MODELS]:
        row = model_card(name)
        row["here"] = _presence(folder, model_files(name))
        if name == choice.picked:
            row[AUTO] = choice.why
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = Table(title=f"dfstream models (weights in {folder})", show_lines=True,
                  caption=f"--model {AUTO} ({choice.device}) picks {choice.picked}: {choice.why}")
    columns = ("name", "card / paper", "trained on", "licence", "input", "hash", "here", "backends")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        cells = [row[col] for col in columns]
        if AUTO in row:
            cells[0] = f"{cells[0]}\n[bold](auto picks this)[/]"
        table.add_row(*cells)
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
