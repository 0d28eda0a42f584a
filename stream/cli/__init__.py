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
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def _add_backend_args(p: argparse.ArgumentParser, default_backend: str = "auto") -> None:
    p.add_argument("--backend", choices=["auto", "torch", "onnx", "tensorrt"], default=default_backend,
                   help="auto: TensorRT, then CUDA torch, then ONNX Runtime on the CPU")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32")
    p.add_argument("--calibrate", type=Path, nargs="+", default=None, metavar="MEDIA",
                   help="videos or images whose face crops calibrate int8")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where converted engines are cached (default: $DFSTREAM_CACHE or ~/.cache/dfstream/engines)")


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
    _add_backend_args(scan)
    scan.set_defaults(run=_run_scan)

    evaluate = sub.add_parser("eval", help="measure models on a labelled dataset (real/ + fake/, or FaceForensics++)")
    evaluate.add_argument("dataset", type=Path, metavar="DATASET",
                          help="folder with real/ and fake/[METHOD/] media, or the FaceForensics++ layout")
    _add_model_args(evaluate)
    evaluate.add_argument("--out", type=Path, required=True, metavar="DIR",
                          help="where metrics.json, videos.csv, roc.png and scores.png are written")
    evaluate.add_argument("--fps", type=float, default=None,
                          help="frames analysed per second of video (default 5; every frame when a clip model runs)")
    evaluate.add_argument("--faces", choices=["mtcnn", "none"], default="mtcnn",
                          help="'none' scores the whole frame as one face (for datasets of face crops)")
    evaluate.add_argument("--threshold", type=float, default=None,
                          help="p(fake) at or above which an item is called fake (default: the models' own, 0.5)")
    evaluate.add_argument("--backend", choices=["auto", "torch", "onnx", "tensorrt"], default="auto")
    evaluate.add_argument("--cache-dir", dest="crop_cache_dir", type=Path, default=None, metavar="DIR",
                          help="face-crop cache (default: $DFSTREAM_CACHE/crops or ~/.cache/dfstream/crops)")
    evaluate.add_argument("--no-cache", action="store_true", help="neither read nor write the face-crop cache")
    # _prepared's engine-conversion settings, fixed for eval: fp32, the default engine cache.
    evaluate.set_defaults(run=_run_eval, precision="fp32", calibrate=None, cache_dir=None)

    serve = sub.add_parser("serve", help="run the live detector: sources in, overlays out on a websocket")
    serve.add_argument("--source", action="append", dest="sources", default=[], metavar="URL_OR_PATH",
                       help="rtsp:// or rtsps:// camera, video file or /dev/videoN (repeatable)")
    serve.add_argument("--loop", action="store_true", help="replay file sources forever (demos)")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8080)")
    serve.add_argument("--config", type=Path, default=None, help="YAML config (cameras, models, thresholds)")
    serve.add_argument("--token", default=None, help="access token, required when binding beyond loopback")
    serve.add_argument("--backend", choices=["auto", "torch", "onnx", "tensorrt"], default=None)
    serve.add_argument("--model", action="append", dest="models", metavar="NAME")
    serve.add_argument("--weights-dir", type=Path, default=None)
    serve.add_argument("--offline", action="store_true", help="never download missing weights")
    serve.add_argument("--device", default=None)
    serve.add_argument("--redis", default=None, metavar="URL",
                       help="also publish to Redis: pub/sub for overlays and status, a Stream for alerts")
    serve.add_argument("--data-dir", type=Path, default=None,
                       help="alert log, spool and evidence (default: $DFSTREAM_DATA or ~/.local/share/dfstream)")
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(run=_run_serve)

    train = sub.add_parser("train", help="train an engine's weights on a labelled dataset "
                                          "(logreg, lstm, videomae, xception)")
    from stream.cli.train import add_arguments as add_train_arguments

    add_train_arguments(train)
    train.set_defaults(run=_run_train)

    explain = sub.add_parser("explain", help="Grad-CAM heatmaps: where in the most fake-looking faces of a video "
                                             "or image a frame engine found its evidence")
    explain.add_argument("path", type=Path, metavar="PATH")
    _add_model_args(explain)
    explain.add_argument("--out", type=Path, required=True, help="folder for the PNGs, heatmaps.npz and "
                                                                 "explanations.json")
    explain.add_argument("--top", type=int, default=8, help="face-frames explained: those with the highest p_fake")
    explain.add_argument("--fps", type=float, default=None, help="frames analysed per second of video (default 5)")
    explain.add_argument("--faces", choices=["mtcnn", "none"], default="mtcnn",
                         help="'none' explains the whole frame (for already-cropped faces)")
    explain.set_defaults(run=_run_explain)

    from stream.cli.alerts import add_parser as add_alerts_parser

    add_alerts_parser(sub)

    models = sub.add_parser("models", help="list the known models or download their weights")
    models_sub = models.add_subparsers(dest="action", required=True)
    mlist = models_sub.add_parser("list", help="name, card, input, weights present, sha256, backends")
    mlist.add_argument("--weights-dir", type=Path, default=None)
    mlist.set_defaults(run=_run_models_list)
    pull = models_sub.add_parser("pull", help="download and verify a model's weights")
    pull.add_argument("names", nargs="+", metavar="NAME")
    pull.add_argument("--weights-dir", type=Path, default=None)
    pull.set_defaults(run=_run_models_pull)

    engines = sub.add_parser("engines", help="build converted engines ahead of time")
    engines_sub = engines.add_subparsers(dest="action", required=True)
    build = engines_sub.add_parser("build", help="export / quantise / build a model for a backend")
    build.add_argument("name", metavar="NAME")
    build.add_argument("--weights-dir", type=Path, default=None)
    build.add_argument("--weights", type=Path, default=None)
    build.add_argument("--offline", action="store_true")
    build.add_argument("--device", default=None)
    _add_backend_args(build, default_backend="onnx")
    build.set_defaults(run=_run_engines_build)
    return parser


def _device(args: argparse.Namespace) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _prepared(name: str, args: argparse.Namespace, weights_file: Path | None):
    """Build `name` from its weights and move it onto the requested backend and precision."""
    from engines.backends import prepare
    from engines.registry import build_engine

    engine = build_engine(name, weights_dir=args.weights_dir, weights_file=weights_file, device=_device(args),
                          allow_download=not args.offline)
    calibration = None
    if args.precision == "int8" and args.calibrate:
        from stream.jobs.calibration import calibration_crops

        calibration = calibration_crops(args.calibrate, engine.spec.size, engine.spec.margin)
    return prepare(engine, args.backend, args.precision, calibration, args.cache_dir)


def _load_engines(args: argparse.Namespace):
    from engines.registry import DEFAULT_MODEL, get_entry

    names = args.models or [DEFAULT_MODEL]
    if args.weights and len(names) != 1:
        raise ValueError("--weights needs exactly one --model")
    entries = [get_entry(n) for n in names]
    engines = [_prepared(n, args, args.weights) for n in names]
    return engines, [e.threshold for e in entries]


def _run_serve(args: argparse.Namespace) -> int:
    import logging
    import secrets

    from aiohttp import web

    from engines.backends import prepare
    from engines.registry import build_engine
    from stream.config.serve import load_config, source_name_for
    from stream.live.faces import FaceDetector
    from stream.live.server.app import build_app
    from stream.live.server.service import LiveService
    from stream.live.sources.live import SourceConfig, validate_url
    from stream.live.sources.urls import redact

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    taken: set[str] = set()
    sources = []
    for url in args.sources:
        validate_url(url)
        name = source_name_for(url, taken)
        taken.add(name)
        sources.append(SourceConfig(name=name, url=url, loop=args.loop).model_dump())
    config = load_config(args.config, {"host": args.host, "port": args.port, "token": args.token,
                                       "models": args.models, "weights_dir": args.weights_dir,
                                       "backend": args.backend, "sources": sources, "redis": args.redis,
                                       "data_dir": args.data_dir})
    if config.needs_token and not config.token:
        config = config.model_copy(update={"token": secrets.token_urlsafe(16)})
    device = _device(args)
    engines = [prepare(build_engine(n, weights_dir=config.weights_dir, device=device,
                                    allow_download=not args.offline), config.backend)
               for n in config.models]
    detector = FaceDetector(config.detector.model_copy(update={"device": device}))
    service = LiveService(config, engines, detector)
    app = build_app(service)
    shown = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    query = f"?token={config.token}" if config.needs_token else ""
    print(f"dfstream serve: {len(config.sources)} source(s): "
          f"{', '.join(redact(s.url) for s in config.sources) or 'none yet'}", flush=True)
    print(f"dfstream serve: open http://{shown}:{config.port}/{query}  (websocket /ws)", flush=True)
    print(f"dfstream serve: alerts -> {config.data_dir / 'alerts.jsonl'}"
          f"{' and ' + redact(config.redis) if config.redis else ''}", flush=True)
    web.run_app(app, host=config.host, port=config.port, print=None, handle_signals=True)
    return EXIT_OK


def _run_models_list(args: argparse.Namespace) -> int:
    from rich.console import Console
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
    Console(width=None if sys.stdout.isatty() else PIPED_TABLE_WIDTH).print(table)
    return EXIT_OK


def _run_models_pull(args: argparse.Namespace) -> int:
    from engines.registry import get_entry
    from engines.weights import fetch

    for name in args.names:
        entry = get_entry(name)
        for source in [entry.weights, *entry.extra_weights.values()]:
            print(f"{name}: {fetch(source, args.weights_dir)}")
    return EXIT_OK


def _run_engines_build(args: argparse.Namespace) -> int:
    if args.backend == "auto":
        raise ValueError("engines build needs a concrete --backend: onnx or tensorrt")
    engine = _prepared(args.name, args, args.weights)
    print(f"{args.name}: {args.backend} {args.precision} -> {getattr(engine, 'path', 'in memory')}")
    return EXIT_OK


def _run_scan(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stream.live.faces import DetectorConfig, FaceDetector
    from stream.jobs.scan import Scanner, ScanOptions

    engines, thresholds = _load_engines(args)
    options = ScanOptions(fps=args.fps, faces=args.faces)
    detector = FaceDetector(DetectorConfig(device=_device(args))) if args.faces == "mtcnn" else None
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


def _run_eval(args: argparse.Namespace) -> int:
    from stream.jobs.datasets import discover
    from stream.jobs.evaluate import CropCache, RichProgress, default_crop_cache_dir, evaluate, write_report
    from stream.live.faces import DetectorConfig, FaceDetector
    from stream.jobs.scan import Scanner, ScanOptions

    dataset = discover(args.dataset)  # a bad dataset fails before any model loads
    engines, thresholds = _load_engines(args)
    detector = FaceDetector(DetectorConfig(device=_device(args))) if args.faces == "mtcnn" else None
    threshold = [args.threshold] if args.threshold is not None else thresholds
    scanner = Scanner(engines, threshold, ScanOptions(fps=args.fps, faces=args.faces), detector)
    cache = None if args.no_cache else CropCache(args.crop_cache_dir or default_crop_cache_dir(), scanner)
    with RichProgress(len(dataset.items)) as progress:
        report = evaluate(dataset, scanner, cache, progress)
    metrics = write_report(report, args.out)
    _print_eval_table(metrics, args.out)
    return EXIT_INPUT_FAILED if report.errors else EXIT_OK


def _run_explain(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from engines.registry import DEFAULT_MODEL, build_engine, get_entry
    from stream.jobs.explain import explain_top, write_explanations
    from stream.live.faces import DetectorConfig, FaceDetector
    from stream.jobs.scan import READ_ERRORS, Scanner, ScanOptions

    names = args.models or [DEFAULT_MODEL]
    if len(names) != 1:
        raise ValueError("explain takes exactly one --model")
    engine = build_engine(names[0], weights_dir=args.weights_dir, weights_file=args.weights, device=_device(args),
                          allow_download=not args.offline)  # the torch network: Grad-CAM needs its gradients
    detector = FaceDetector(DetectorConfig(device=_device(args))) if args.faces == "mtcnn" else None
    scanner = Scanner([engine], [get_entry(names[0]).threshold], ScanOptions(fps=args.fps, faces=args.faces),
                      detector)
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


def _run_train(args: argparse.Namespace) -> int:
    from stream.cli.train import run

    return run(args)


def _print_eval_table(metrics: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    table = Table(title=f"dfstream eval ({'+'.join(metrics['models'])}, threshold {metrics['threshold']:.2f}) "
                        f"-> {out}")
    for col in ("subset", "level", "n (real/fake)", "accuracy", "F1", "AUC"):
        table.add_column(col, justify="left" if col in ("subset", "level") else "right")
    methods = metrics["methods"] if len(metrics["methods"]) > 1 else {}  # one method is the same as "all"
    rows = [("all", metrics)] + [(f"{m} vs reals", by) for m, by in methods.items()]
    for subset, by_level in rows:
        for level in ("video", "frame"):
            if level in by_level:
                m = by_level[level]
                table.add_row(subset, level, f"{m['n']} ({m['real']}/{m['fake']})", fmt(m["accuracy"]),
                              fmt(m["f1"]), fmt(m["auc"]))
    Console(width=None if sys.stdout.isatty() else PIPED_TABLE_WIDTH).print(table)


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
    from engines.backends import BackendUnavailable
    from engines.registry import UnknownModel
    from engines.weights import ChecksumMismatch, WeightsUnavailable
    from stream.config.serve import ConfigError
    from stream.live.sources import SourceError

    try:
        return args.run(args)
    except (UnknownModel, WeightsUnavailable, ChecksumMismatch, WeightsFormatError, ValueError,
            BackendUnavailable, SourceError, ConfigError) as exc:
        print(f"dfstream {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
