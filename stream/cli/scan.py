"""`dfstream scan`: score video files and still images, one verdict per input, as a table or JSON lines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from stream.cli.baseline import add_baseline, check_for_judging, read_for_judging
from stream.cli.common import EXIT_INPUT_FAILED, EXIT_OK, add_backend_args, add_model_args, face_detector, \
    add_calibration, load_models, print_table
from stream.cli.voices import add_modality, modality

COLOURS = {"fake": "red", "real": "green", "no-face": "yellow", "low-quality": "grey50", "error": "magenta"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("scan", help="score video files and still images (faces), and voices")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object per input instead of a table")
    p.add_argument("--fps", type=float, default=None,
                   help="frames analysed per second of video (default 5; every frame when a clip model runs)")
    p.add_argument("--faces", choices=["mtcnn", "none"], default="mtcnn",
                   help="'none' scores the whole frame as one face (for already-cropped faces)")
    add_backend_args(p)
    add_calibration(p)
    add_baseline(p, voices=True)
    add_modality(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stream.jobs.baseline import scan as scan_with
    from stream.jobs.scan import Scanner, ScanOptions

    chosen = modality(args)
    baseline = read_for_judging(args, chosen, voices=True)
    if chosen != "face":
        from stream.cli.voices import run_scan

        return run_scan(args, chosen, baseline)
    engines, thresholds, ensemble = load_models(args)
    scanner = Scanner(engines, thresholds, ScanOptions(fps=args.fps, faces=args.faces), face_detector(args),
                      ensemble=ensemble)
    if baseline is not None:
        check_for_judging(baseline, args.baseline, engines, ensemble)
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[frames]} frames"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("scanning", total=len(args.paths), frames=0)
        frames_done = 0

        def count_frames(n: int) -> None:
            nonlocal frames_done
            frames_done += n
            progress.update(task, frames=frames_done)

        for path in args.paths:
            progress.update(task, description=f"scanning {path.name}")
            result = (scanner.scan(path, on_frames=count_frames) if baseline is None
                      else scan_with(scanner, path, baseline, on_frames=count_frames))
            results.append(result)
            if args.json:
                print(json.dumps(result.to_json()), flush=True)
            progress.advance(task)
    if not args.json:
        print_results(results)
    return EXIT_INPUT_FAILED if any(r.label == "error" for r in results) else EXIT_OK


def print_results(results: list) -> None:
    from rich.table import Table

    bar = "camera baseline" if results[0].baseline is not None else "threshold"
    table = Table(title=f"dfstream scan ({results[0].model}, {bar} {results[0].threshold:.2f})")
    for col in ("input", "verdict", "p(fake)", "face-frames", "tracks", "note"):
        table.add_column(col, justify="right" if col in ("p(fake)", "face-frames", "tracks") else "left")
    for r in results:
        table.add_row(r.path, f"[{COLOURS[r.label]}]{r.label}[/]", "" if r.score is None else f"{r.score:.3f}",
                      str(r.frames_scored), str(len(r.tracks)), r.error or r.reason or "")
    print_table(table)
