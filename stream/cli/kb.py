"""`dfstream kb build PAPERS_DIR --out KB_DIR`: a knowledge base from a folder of papers (PDF, text, Markdown).

A paper that cannot be read is named with the reason and skipped; the others are still ingested (exit 1 then)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stream.cli.common import EXIT_INPUT_FAILED, EXIT_OK


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("kb", help="knowledge bases for `explain --cite`: build one from your papers")
    sub = p.add_subparsers(dest="kb_command", required=True)
    b = sub.add_parser("build", help="ingest PDFs, text and Markdown into a KB folder (BM25, plus a dense index "
                                     "when the embedding model is here)")
    b.add_argument("papers", type=Path, metavar="PAPERS_DIR")
    b.add_argument("--out", type=Path, required=True, metavar="KB_DIR")
    b.add_argument("--embed-model", default=None, metavar="NAME_OR_DIR",
                   help="sentence-transformers model for the dense index (default: $DFSTREAM_EMBED_MODEL or "
                        "all-MiniLM-L6-v2 when cached); without one the KB is BM25 only")
    b.add_argument("--no-dense", action="store_true", help="build no dense index even if a model is here")
    b.add_argument("--offline", action="store_true", help="never download the embedding model")
    b.set_defaults(run=run_build)
    return p


def run_build(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stream.jobs.explain import kb
    from stream.jobs.explain.retrieve import load_embedder

    embedder, note = (None, "dense index not asked for (--no-dense)") if args.no_dense else \
        load_embedder(args.embed_model, allow_download=not args.offline)
    files = kb.paper_files(args.papers) if args.papers.is_dir() else []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("ingesting papers", total=len(files) or None)
        meta = kb.build(args.papers, args.out, embedder,
                        on_file=lambda path: progress.update(task, advance=1, description=f"read {path.name}"))
    for err in meta.errors:
        print(f"dfstream kb build: skipped {err['error']}", file=sys.stderr)
    dense = f"dense index: {meta.embedding.model}" if meta.embedding else f"BM25 only ({note})"
    print(f"{meta.passages} passages from {len(meta.documents)} papers -> {args.out} ({dense})")
    return EXIT_INPUT_FAILED if meta.errors else EXIT_OK
