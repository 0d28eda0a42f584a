"""`dfstream` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_INPUT_FAILED = 1  # some input could not be scanned; the others were
EXIT_USAGE = 2  # bad arguments, unknown model, weights unavailable
PIPED_TABLE_WIDTH = 200


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", dest="models", metavar="NAME",
                   help="model to run (repeatable; several are fused by mean p_fake). Default: meso4-df")
    p.add_argument("--weights-dir", type=Path, default=None,
                   help="folder holding weight files (default: $DFSTREAM_WEIGHTS or ~/.cache/dfstream/weights)")
    p.add_argument("--weights", type=Path, default=None,
                   help="use this weight file for the single model named (not checked against the registry hash)")
    p.add_argument("--offline", action="store_true", help="never download missing weights")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfstream", description="Live deepfake detection.")
    sub = parser.add_subparsers(dest="command", required=True)

    scan = sub.add_parser("scan", help="score video files and still images")
    scan.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    _add_model_args(scan)
    scan.add_argument("--json", action="store_true", help="print one JSON object per input instead of a table")
    scan.add_argument("--fps", type=float, default=None,
                      help="frames analysed per second of video (default 5; every frame when a clip model runs)")
    scan.add_argument("--faces", choices=["mtcnn", "none"], default="mtcnn",
                      help="'none' scores the whole frame as one face (for already-cropped faces)")
    scan.set_defaults(run=_run_scan)
    return parser


def _load_engines(args: argparse.Namespace):
    from engines.registry import DEFAULT_MODEL, build_engine, get_entry

    names = args.models or [DEFAULT_MODEL]
    if args.weights and len(names) != 1:
        raise ValueError("--weights needs exactly one --model")
    entries = [get_entry(n) for n in names]
    engines = [
        build_engine(n, weights_dir=args.weights_dir, weights_file=args.weights, device=args.device,
                     allow_download=not args.offline)
        for n in names
    ]
    return engines, [e.threshold for e in entries]


def _run_scan(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stream.faces import DetectorConfig, FaceDetector
    from stream.scan import Scanner, ScanOptions

    engines, thresholds = _load_engines(args)
    options = ScanOptions(fps=args.fps, faces=args.faces)
    detector = FaceDetector(DetectorConfig(device=args.device)) if args.faces == "mtcnn" else None
    scanner = Scanner(engines, thresholds, options, detector)
    err = Console(stderr=True)
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[frames]} frames"), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task("scanning", total=len(args.paths), frames=0)
        frames_done = 0

        def count_frames(n: int) -> None:
            nonlocal frames_done
            frames_done += n
            progress.update(task, frames=frames_done)

        for path in args.paths:
            progress.update(task, description=f"scanning {path.name}")
            result = scanner.scan(path, on_frames=count_frames)
            results.append(result)
            if args.json:
                print(json.dumps(result.to_json()), flush=True)
            progress.advance(task)
    if not args.json:
        _print_table(results)
    return EXIT_INPUT_FAILED if any(r.label == "error" for r in results) else EXIT_OK


def _print_table(results) -> None:
    from rich.console import Console
    from rich.table import Table

    colours = {"fake": "red", "real": "green", "no-face": "yellow", "error": "magenta"}
    table = Table(title=f"dfstream scan ({results[0].model}, threshold {results[0].threshold:.2f})")
    for col in ("input", "verdict", "p(fake)", "face-frames", "tracks", "note"):
        table.add_column(col, justify="right" if col in ("p(fake)", "face-frames", "tracks") else "left")
    for r in results:
        table.add_row(
            r.path,
            f"[{colours[r.label]}]{r.label}[/]",
            "" if r.score is None else f"{r.score:.3f}",
            str(r.frames_scored),
            str(len(r.tracks)),
            r.error or "",
        )
    # Piped output (logs, CI) has no terminal width; keep whole paths on one line there.
    Console(width=None if sys.stdout.isatty() else PIPED_TABLE_WIDTH).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from engines.base import WeightsFormatError
    from engines.registry import UnknownModel
    from engines.weights import ChecksumMismatch, WeightsUnavailable

    try:
        return args.run(args)
    except (UnknownModel, WeightsUnavailable, ChecksumMismatch, WeightsFormatError, ValueError) as exc:
        print(f"dfstream {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
