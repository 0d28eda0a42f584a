"""Live pipeline benchmark: N real-time 720p30 file sources through the real sources, scheduler and engines.

Per stream it prints displayed fps (frames decoded and paced per second), analysed fps (frames that went through
detection and the engines), frames dropped at the latest-frame buffer, and frame->score latency p50/p95 (from the
moment a frame was decoded to the moment its overlay was published). For the process: CPU (in cores) and RSS.

    .venv/bin/python benchmarks/live.py --streams 2 --model meso4-df --seconds 30
    .venv/bin/python benchmarks/live.py --streams 1 --model xception-140k --seconds 30
    .venv/bin/python benchmarks/live.py --streams 1 --model xception-140k --precision int8
    .venv/bin/python benchmarks/live.py --streams 4 --compare      # detect every frame vs every 3rd, one run
    .venv/bin/python benchmarks/live.py --streams 8 --compare --pipeline overlapped --faces-backend onnx

The 720p30 inputs are made once from the shared FF++ clips (scaled with PyAV into a temp folder). xception-140k
runs with random weights in the card's layout when its published file is absent: speed does not depend on values.
Targets on the 2-core reference machine (issue 4): MesoNet, 2 streams at full frame rate with >= 5 analysed fps
each and p95 <= 300 ms; xception-140k, 1 stream at >= 5 analysed fps.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's packages, not this folder's engines.py benchmark

import av
import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

SHARED_VIDEOS = sorted((ROOT.parent / "shared" / "data" / "ffpp-c23").glob("*/*.mp4"))
WIDTH, HEIGHT, FPS = 1280, 720, 30
TARGET_ANALYSED_FPS = 5.0
CALIBRATION_VIDEOS = 2
WARMUP_S = 15.0  # past the first-call spike (ONNX session warm-up) and the rate recovery after it


def make_720p30(src: Path, dst: Path, seconds: float = 12.0) -> Path:
    """Re-encode `src` as 1280x720 at 30 fps (frames retimed), as a camera-like file source."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vs.options = {"preset": "veryfast"}
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= seconds * FPS:
                break
            f = frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
            f.pts, f.time_base = i, Fraction(1, FPS)
            for packet in vs.encode(f):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    return dst


def build(model: str, weights_dir: Path | None, backend: str, precision: str, tmp: Path):
    from engines.backends import prepare
    from engines.registry import build_engine
    from engines.weights import WeightsUnavailable

    try:
        engine = build_engine(model, weights_dir=weights_dir, allow_download=False)
    except WeightsUnavailable:
        if model != "xception-140k":
            raise
        import torch

        from engines.architectures.xception_140k import Xception140k

        path = tmp / "random_xception.pth"
        torch.save(Xception140k().state_dict(), path)
        engine = build_engine(model, weights_file=path)
    calibration = None
    if precision == "int8":  # calibrated on faces from clips the benchmark does not play
        from stream.jobs.calibration import calibration_crops

        calibration = calibration_crops(SHARED_VIDEOS[-CALIBRATION_VIDEOS:], engine.spec.size, engine.spec.margin)
    return prepare(engine, backend, precision, calibration, cache_dir=tmp / "engines")


def main() -> None:
    from engines.backends import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--model", default="meso4-df")
    parser.add_argument("--weights-dir", type=Path, default=ROOT.parent / "shared" / "weights" / "mesonet")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="int8: ONNX Runtime static quantisation, calibrated on two shared clips")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds after warm-up")
    parser.add_argument("--warmup", type=float, default=WARMUP_S, help="seconds run before measuring")
    parser.add_argument("--fps", type=float, default=TARGET_ANALYSED_FPS, help="target analysed fps per stream")
    parser.add_argument("--detect-side", type=int, default=None,
                        help="MTCNN's longest side (config detector.max_side; default 640). 480 is ~1.8x faster "
                             "but finds no face under ~107 px in a 1280-wide frame (~80 px at 640)")
    parser.add_argument("--detect-every", type=int, default=3,
                        help="analysed frames per full-frame MTCNN (the scheduler's detection policy; 1: every frame)")
    parser.add_argument("--compare", action="store_true",
                        help="run today's policy (detect every analysed frame, serial, MTCNN on torch) and the new "
                             "one (--detect-every, --pipeline, --faces-backend) on the same inputs, side by side")
    parser.add_argument("--pipeline", default="serial", choices=("serial", "overlapped"),
                        help="the scheduler's pipeline (config scheduler.pipeline); thread pools sized by "
                             "stream/live/scheduler/threads.py plan_threads")
    parser.add_argument("--faces-backend", default="torch", choices=("torch", "onnx"),
                        help="what runs MTCNN's nets (config detector.backend)")
    args = parser.parse_args()

    from stream.config.scheduler import DetectionPolicy
    from stream.live.faces import DetectorConfig

    tmp = Path(tempfile.mkdtemp(prefix="dfstream-live-bench-"))
    videos = [make_720p30(SHARED_VIDEOS[i % len(SHARED_VIDEOS)], tmp / f"cam{i}.mp4") for i in range(args.streams)]
    engine = build(args.model, args.weights_dir, args.backend, args.precision, tmp)
    detector_config = DetectorConfig() if args.detect_side is None else DetectorConfig(max_side=args.detect_side)
    new = (DetectionPolicy(detect_every=args.detect_every), args.pipeline, args.faces_backend)
    setups = [new]
    if args.compare:  # today's policy first, then the new one, on the same inputs in one run
        setups = [(DetectionPolicy(detect_every=1), "serial", "torch"),
                  (DetectionPolicy(detect_every=max(2, args.detect_every)), args.pipeline, args.faces_backend)]
    policies = [p for p, _, _ in setups]
    console = Console(width=200)  # the tables stay whole in logs and pipes
    runs = [run_once(args, engine, videos, detector_config, policy, pipeline, backend, console)
            for policy, pipeline, backend in setups]
    if args.compare:
        base, new = runs
        table = Table(title=f"--compare: detect every {policies[1].detect_every}, {setups[1][1]} pipeline, MTCNN on "
                            f"{setups[1][2]} vs every analysed frame, serial, torch")
        for col in ("stream", "analysed fps ratio", "first-box lag s (every / interval)",
                    "track ids (every / interval)", "mean p(fake) diff"):
            table.add_column(col, justify="right")
        for name in base["streams"]:
            b, n = base["streams"][name], new["streams"][name]
            diff = abs(n["mean_p"] - b["mean_p"]) if not (np.isnan(n["mean_p"]) or np.isnan(b["mean_p"])) else np.nan
            table.add_row(name, f"{n['analysed'] / max(b['analysed'], 1e-9):.2f}",
                          f"{b['lag']:.2f} / {n['lag']:.2f}", f"{b['ids']} / {n['ids']}", f"{diff:.3f}")
        console.print(table)
        console.print(f"process CPU {base['cpu']:.2f} -> {new['cpu']:.2f} cores; total analysed fps "
                      f"{sum(s['analysed'] for s in base['streams'].values()):.1f} -> "
                      f"{sum(s['analysed'] for s in new['streams'].values()):.1f}")


def run_once(args, engine, videos, detector_config, policy, pipeline, backend, console) -> dict:
    """One measured run of the real sources, scheduler and engine under one detection policy and pipeline."""
    from engines.quality import smallest_floor_px
    from stream.config.scheduler import SchedulerConfig
    from stream.live.faces import FaceDetector
    from stream.live.scheduler.threads import apply_threads, plan_threads
    from stream.live.scheduler.loop import Scheduler
    from stream.live.sources.live import AVLiveSource, SourceConfig

    latest_status: dict[str, dict] = {}
    overlays: dict[str, list[float]] = {}
    scores: dict[str, list[float]] = {}
    ids: dict[str, set[int]] = {}
    first_seen: dict[str, float] = {}
    first_box: dict[str, float] = {}
    measuring = False

    def publish(msg: dict) -> None:
        if msg["type"] == "status":
            latest_status[msg["stream"]] = msg
        elif msg["type"] == "overlay":
            name, now = msg["stream"], time.monotonic()
            first_seen.setdefault(name, now)
            if msg["faces"]:
                first_box.setdefault(name, now)
            if measuring:
                overlays.setdefault(name, []).append(msg["latency_ms"])
                for f in msg["faces"]:
                    ids.setdefault(name, set()).add(f["track"])
                    scores.setdefault(name, []).extend(f["engines"].values())

    plan = plan_threads(pipeline)
    apply_threads(plan, [engine])
    detector_config = detector_config.model_copy(update={"backend": backend, "threads": plan.detector})
    detector = FaceDetector(detector_config, smallest_floor_px([engine]))  # as serve builds it
    sched = Scheduler(detector, [engine], publish, SchedulerConfig(detection=policy, pipeline=pipeline))
    sources = [AVLiveSource(SourceConfig(name=f"cam{i}", url=str(v), loop=True, analysed_fps=args.fps))
               for i, v in enumerate(videos)]
    for s in sources:
        sched.add(s)
        s.start()
    sched.start()
    proc = psutil.Process()
    time.sleep(args.warmup)
    received0 = {s.name: s.buffer.received for s in sources}
    dropped0 = {s.name: s.buffer.dropped for s in sources}
    cpu0, t0 = proc.cpu_times(), time.monotonic()
    measuring = True
    time.sleep(args.seconds)
    measuring = False
    elapsed = time.monotonic() - t0
    cpu1 = proc.cpu_times()
    rss = proc.memory_info().rss
    received = {s.name: s.buffer.received - received0[s.name] for s in sources}
    dropped = {s.name: s.buffer.dropped - dropped0[s.name] for s in sources}
    sched.stop()
    for s in sources:
        s.stop()

    table = Table(title=f"live: {args.streams} × {WIDTH}x{HEIGHT}@{FPS} files, {engine.name} on "
                        f"{type(engine).__name__} {args.precision}, target {args.fps} analysed fps, detect side "
                        f"{detector_config.max_side}, detect every {policy.detect_every}, {pipeline} pipeline, MTCNN on {backend} "
                        f"({plan}), {args.seconds:.0f} s measured")
    for col in ("stream", "displayed fps", "analysed fps", "dropped", "latency p50 ms", "latency p95 ms",
                "first-box lag s", "track ids", "mean p(fake)"):
        table.add_column(col, justify="right")
    out: dict = {"streams": {}}
    for s in sources:
        lat = np.asarray(overlays.get(s.name, [np.nan]))
        lag = first_box.get(s.name, np.nan) - first_seen.get(s.name, np.nan)
        mean_p = float(np.mean(scores[s.name])) if scores.get(s.name) else np.nan
        analysed = len(overlays.get(s.name, [])) / elapsed
        out["streams"][s.name] = {"analysed": analysed, "lag": lag, "ids": len(ids.get(s.name, ())), "mean_p": mean_p}
        table.add_row(s.name, f"{received[s.name] / elapsed:.1f}", f"{analysed:.1f}",
                      str(dropped[s.name]), f"{np.nanpercentile(lat, 50):.0f}", f"{np.nanpercentile(lat, 95):.0f}",
                      f"{lag:.2f}", str(len(ids.get(s.name, ()))), f"{mean_p:.3f}")
    console.print(table)
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed
    events = latest_status.get("cam0", {}).get("scheduler", {})
    console.print(f"process CPU {cpu:.2f} cores of {psutil.cpu_count()} | RSS {rss / 2**20:.0f} MiB | "
                  f"scheduler scale {events.get('scale')} load {events.get('load')} | "
                  f"1-min load average {psutil.getloadavg()[0]:.1f}")
    console.print(f"events: {events.get('events')}")
    out["cpu"] = cpu
    return out


if __name__ == "__main__":
    main()
