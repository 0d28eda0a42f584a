"""Throughput of the `scan` path on real videos, stage by stage and end to end (CPU, medians over repeats).

Run: .venv/bin/python benchmarks/scan.py [--videos GLOB...] [--repeats 3] [--model meso4-df]
     [--weights-dir ../shared/weights/mesonet] [--fps 5] [--frames N]

Every video is first cut to its first `--frames` frames (a stream copy of the packets, no re-encode, into a
temporary folder; `--frames 0` keeps whole files) and every figure below runs on those same inputs.

What each figure means (all timed with time.perf_counter after one warm-up run; the median over `--repeats`):
- decode, all frames: frames/s of AVSource over each whole input, every frame decoded and converted to RGB.
- decode, sampled at --fps: AVSource with sample_fps=--fps; all frames are still decoded but only the kept ones
  are converted to RGB. Reported as decoded frames/s and as kept (sampled) frames/s of wall time.
- MTCNN: FaceDetector.detect on batches of DETECT_BATCH sampled frames, wall ms divided by the frame count.
- MesoNet: engine.predict on real face crops (from those detections, cut at the engine's size and margin),
  wall ms per crop at batch 1 and at batch 16.
- end to end: stream.jobs.scan.Scanner.scan over all inputs at --fps, as sampled frames analysed per second of
  wall time and as seconds of video per second of wall time (> 1 means faster than real time).
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from engines.base import Engine  # noqa: E402
from engines.registry import DEFAULT_MODEL, build_engine, get_entry  # noqa: E402
from stream.live.faces import Detection, FaceDetector, crop_faces  # noqa: E402
from stream.jobs.scan import Scanner, ScanOptions  # noqa: E402
from stream.live.sources import AVSource  # noqa: E402

SHARED = REPO.parent / "shared"
DEFAULT_VIDEOS = str(SHARED / "data" / "ffpp-c23" / "*" / "*.mp4")
DEFAULT_WEIGHTS_DIR = SHARED / "weights" / "mesonet"
DEFAULT_REPEATS = 3
DEFAULT_FPS = 5.0
# Frames kept per video: at 25 fps and --fps 5 that is one full detector batch of 8 per video, and keeps the
# default run to a couple of minutes on 2 cores (longer when other processes share them).
DEFAULT_FRAMES = 40
DETECT_BATCH = ScanOptions().batch_frames  # the batch the scanner sends to MTCNN
ENGINE_BATCHES = (1, 16)
ENGINE_CROPS = 64  # crops scored per repeat at each batch size (real crops, cycled if fewer were found)
CONSOLE_WIDTH = 100  # wide enough that the table does not wrap when piped to a file

T = TypeVar("T")
Detections = list[list[Detection]]  # per frame of a batch, its faces


@dataclass(frozen=True)
class Clip:
    path: Path
    frames: int
    seconds: float


@dataclass(frozen=True)
class Row:
    figure: str
    unit: str
    runs: list[float]


def cut(src: Path, dst: Path, frames: int) -> None:
    """Copy the first `frames` video packets in decode order (every reference they need comes before them)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        ostream = out.add_stream_from_template(stream)
        packets = (p for p in inp.demux(stream) if p.dts is not None)
        for packet in itertools.islice(packets, frames):
            packet.stream = ostream
            out.mux(packet)


def probe(path: Path) -> Clip:
    """Frame count of an input by decoding it, and the seconds of video those frames span at its frame rate."""
    src = AVSource(path, sample_fps=None)
    for _ in src.frames():
        pass
    return Clip(path=path, frames=src.frames_decoded, seconds=src.frames_decoded / (src.rate or 1.0))


def resolve_videos(patterns: Sequence[str]) -> list[Path]:
    found = sorted({Path(p).resolve() for pattern in patterns for p in glob.glob(pattern)})
    if not found:
        raise SystemExit(f"no video matches {list(patterns)}")
    return found


def timed(fn: Callable[[], T], repeats: int) -> list[T]:
    """Run `fn` once to warm up, then `repeats` times; `fn` returns the figure of one run."""
    fn()
    return [fn() for _ in range(repeats)]


def decode_rates(clips: Sequence[Clip], fps: float | None) -> tuple[float, float]:
    """(decoded frames/s, emitted frames/s) over all clips for one pass."""
    decoded = emitted = 0
    start = time.perf_counter()
    for clip in clips:
        src = AVSource(clip.path, sample_fps=fps)
        for _ in src.frames():
            pass
        decoded, emitted = decoded + src.frames_decoded, emitted + src.frames_emitted
    wall = time.perf_counter() - start
    return decoded / wall, emitted / wall


def sampled_frames(clips: Sequence[Clip], fps: float) -> Iterator[list[np.ndarray]]:
    """Sampled frames per clip, as the scanner would batch them (same-sized frames in each batch)."""
    for clip in clips:
        images = [f.image for f in AVSource(clip.path, sample_fps=fps).frames()]
        for i in range(0, len(images), DETECT_BATCH):
            yield images[i : i + DETECT_BATCH]


def detect_pass(detector: FaceDetector, batches: Sequence[list[np.ndarray]]) -> tuple[float, list[Detections]]:
    """(ms per frame, detections per batch) for one pass of FaceDetector.detect over every batch."""
    start = time.perf_counter()
    found = [detector.detect(batch) for batch in batches]
    return (time.perf_counter() - start) * 1e3 / sum(len(b) for b in batches), found


def real_crops(batches: Sequence[list[np.ndarray]], found: Sequence[Detections], engine: Engine) -> np.ndarray:
    """ENGINE_CROPS face crops cut at the engine's size and margin from the detections (cycled if fewer)."""
    spec = engine.spec
    crops = [
        crop_faces(image, [d.box for d in faces], spec.size, spec.margin)
        for batch, detections in zip(batches, found)
        for image, faces in zip(batch, detections)
    ]
    faces = np.concatenate(crops) if crops else np.empty((0, spec.size, spec.size, 3), np.uint8)
    if not len(faces):
        raise SystemExit("the detector found no face in the sampled frames; no real crops to score")
    return faces[np.arange(ENGINE_CROPS) % len(faces)]


def predict_ms(engine: Engine, crops: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(crops), batch):
        engine.predict(crops[i : i + batch])
    return (time.perf_counter() - start) * 1e3 / len(crops)


def scan_pass(scanner: Scanner, clips: Sequence[Clip]) -> tuple[float, float]:
    """(sampled frames analysed per wall second, video seconds per wall second) for one scan of every clip."""
    analysed = 0

    def count(n: int) -> None:
        nonlocal analysed
        analysed += n

    start = time.perf_counter()
    for clip in clips:
        result = scanner.scan(clip.path, on_frames=count)
        if result.label == "error":
            raise SystemExit(f"scan failed on {clip.path}: {result.error}")
    wall = time.perf_counter() - start
    return analysed / wall, sum(c.seconds for c in clips) / wall


def context(clips: Sequence[Clip], args: argparse.Namespace, source_count: int, load_before: float) -> str:
    load_after = os.getloadavg()[0]
    cpus = len(os.sched_getaffinity(0))
    busy = " (busier than the CPU count: figures are contended)" if max(load_before, load_after) > cpus else ""
    cut_note = f"first {args.frames} frames of each" if args.frames else "whole files"
    return (
        f"{platform.machine()} | os.cpu_count {os.cpu_count()} | "
        f"usable CPUs {cpus} | torch {torch.__version__} threads "
        f"{torch.get_num_threads()} (interop {torch.get_num_interop_threads()}) | PyAV {av.__version__} | "
        f"1-min load {load_before:.2f} before, {load_after:.2f} after{busy}\n"
        f"{source_count} videos, {cut_note}: {sum(c.frames for c in clips)} frames, "
        f"{sum(c.seconds for c in clips):.1f} s of video | model {args.model} | --fps {args.fps:g} | "
        f"repeats {args.repeats} (+1 warm-up)"
    )


def render(rows: Sequence[Row]) -> Table:
    table = Table(title="scan throughput (median over repeats)")
    for name, justify in [("figure", "left"), ("median", "right"), ("unit", "left"), ("min .. max", "right")]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        fmt = "{:.2f}" if statistics.median(row.runs) < 10 else "{:.1f}"
        spread = f"{fmt.format(min(row.runs))} .. {fmt.format(max(row.runs))}"
        table.add_row(row.figure, fmt.format(statistics.median(row.runs)), row.unit, spread)
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", nargs="+", default=[DEFAULT_VIDEOS], metavar="GLOB")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR)
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help="sampled frames per second of video")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames kept per video; 0 = whole files")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.frames < 0 or args.fps <= 0:
        p.error("--repeats must be >= 1, --frames >= 0 and --fps > 0")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    console = Console(width=CONSOLE_WIDTH)
    sources = resolve_videos(args.videos)
    engine = build_engine(args.model, weights_dir=args.weights_dir, allow_download=False)
    detector = FaceDetector()
    scanner = Scanner([engine], [get_entry(args.model).threshold], ScanOptions(fps=args.fps), detector=detector)
    n = args.repeats

    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        if args.frames:
            for i, src in enumerate(sources):
                cut(src, Path(tmp) / f"{i:02d}_{src.name}", args.frames)
            paths = sorted(Path(tmp).iterdir())
        else:
            paths = sources
        clips = [probe(p) for p in paths]

        with console.status("decoding"):
            full = [d for d, _ in timed(lambda: decode_rates(clips, None), n)]
            sampled = timed(lambda: decode_rates(clips, args.fps), n)
        batches = list(sampled_frames(clips, args.fps))
        with console.status("detecting faces"):
            detect = timed(lambda: detect_pass(detector, batches), n)
            crops = real_crops(batches, detect[-1][1], engine)
        with console.status("scoring crops"):
            predict = {b: timed(lambda b=b: predict_ms(engine, crops, b), n) for b in ENGINE_BATCHES}
        with console.status("scanning end to end"):
            scans = timed(lambda: scan_pass(scanner, clips), n)

        rows = [
            Row("decode, all frames (RGB each)", "frames/s", full),
            Row(f"decode, sampled at {args.fps:g} fps", "decoded frames/s", [d for d, _ in sampled]),
            Row(f"decode, sampled at {args.fps:g} fps", "kept (RGB) frames/s", [e for _, e in sampled]),
            Row(f"MTCNN detect, batch {DETECT_BATCH}", "ms/frame", [ms for ms, _ in detect]),
            *(Row(f"{engine.name} predict, batch {b}", "ms/crop", predict[b]) for b in ENGINE_BATCHES),
            Row(f"end to end Scanner.scan at {args.fps:g} fps", "sampled frames/s", [f for f, _ in scans]),
            Row(f"end to end Scanner.scan at {args.fps:g} fps", "video s / wall s", [v for _, v in scans]),
        ]
        console.print(render(rows))
        console.print(context(clips, args, len(sources), load_before), highlight=False)


if __name__ == "__main__":
    main()
