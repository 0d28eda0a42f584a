"""`dfstream explain`: Grad-CAM heatmaps of the most fake-looking faces of one video or image.

It runs the torch network whatever the backend elsewhere: Grad-CAM needs its gradients."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stream.cli.common import EXIT_INPUT_FAILED, EXIT_OK, add_model_args, device, face_detector


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("explain", help="Grad-CAM heatmaps: where in the most fake-looking faces of a video "
                                              "or image a frame engine found its evidence")
    p.add_argument("path", type=Path, metavar="PATH")
    add_model_args(p)
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs, heatmaps.npz and "
                                                           "explanations.json")
    p.add_argument("--top", type=int, default=8, help="face-frames explained: those with the highest p_fake")
    p.add_argument("--fps", type=float, default=None, help="frames analysed per second of video (default 5)")
    p.add_argument("--faces", choices=["mtcnn", "none"], default="mtcnn",
                   help="'none' explains the whole frame (for already-cropped faces)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from engines.registry import DEFAULT_MODEL, build_engine, get_entry
    from stream.jobs.explain import explain_top, write_explanations
    from stream.jobs.scan import READ_ERRORS, Scanner, ScanOptions

    names = args.models or [DEFAULT_MODEL]
    if len(names) != 1:
        raise ValueError("explain takes exactly one --model")
    engine = build_engine(names[0], weights_dir=args.weights_dir, weights_file=args.weights, device=device(args),
                          allow_download=not args.offline)
    scanner = Scanner([engine], [get_entry(names[0]).threshold], ScanOptions(fps=args.fps, faces=args.faces),
                      face_detector(args))
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[frames]} frames"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"explaining {args.path.name}", frames=0)

        def counted(batches):
            frames = 0
            for batch in batches:
                frames += batch.frames
                progress.update(task, frames=frames)
                yield batch

        try:
            items = explain_top(engine, counted(scanner.face_batches(args.path)), args.top)
        except READ_ERRORS as exc:
            print(f"dfstream explain: {exc}", file=sys.stderr)
            return EXIT_INPUT_FAILED
    summary = write_explanations(args.out, args.path, engine.name, items)
    for e in summary["explanations"]:
        print(f"{e['rank']:>2}. frame {e['frame']:>5} track {e['track']:>3} p_fake {e['p_fake']:.3f} -> "
              f"{args.out / e['image']}")
    return EXIT_OK
