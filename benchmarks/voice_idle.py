"""Does the voice path cost face-only streams anything while it is idle? Face-only streams (the shared FF++ clips at
720p30, which have no sound) through the real sources, scheduler, MTCNN and engine, with and without the voice path
present: the voice thread running with its engine built and listening to every stream (issue 26's done-when: face
throughput drops by no more than 5 %).

Runs alternate (without, with, without, with, ...) on the same inputs in one process, so a machine whose load
drifts affects both sides alike; each run's analysed frames per second (all streams) and process CPU are printed,
with each pair's ratio, then the mean of each side and their ratio. On a loaded machine the fps of one run moves
by more than 5 % from the next, so the voice thread's own CPU time (per thread, from the kernel) is printed too:
what the idle path takes from the cores the faces use, whatever the noise.

    .venv/bin/python benchmarks/voice_idle.py --streams 2 --pairs 3 --seconds 30
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from live import SHARED_VIDEOS, make_720p30  # noqa: E402  (benchmarks/live.py: the same camera-like inputs)

AASIST = ROOT.parent / "shared" / "weights" / "aasist"
MESONET = ROOT.parent / "shared" / "weights" / "mesonet"


def run(videos, engine, voice_engines, seconds: float, warmup: float, fps: float) -> dict:
    from engines.quality import smallest_floor_px
    from stream.config.voices import VoiceConfig
    from stream.live.faces import FaceDetector
    from stream.live.scheduler.loop import Scheduler
    from stream.live.sources.live import AVLiveSource, SourceConfig
    from stream.messages import Overlay

    counts: dict[str, int] = {}
    measuring = [False]

    def publish(record) -> None:
        if measuring[0] and isinstance(record, Overlay):
            counts[record.stream] = counts.get(record.stream, 0) + 1

    voices = None
    if voice_engines:
        from stream.live.voices.live import VoiceLoop

        voices = VoiceLoop(voice_engines, VoiceConfig(models=[e.name for e in voice_engines]))
    sched = Scheduler(FaceDetector(None, smallest_floor_px([engine])), [engine], publish, voices=voices)
    sources = [AVLiveSource(SourceConfig(name=f"cam{i}", url=str(v), loop=True, analysed_fps=fps))
               for i, v in enumerate(videos)]
    for s in sources:
        sched.add(s)
        if voices is not None:
            voices.attach(s)
        s.start()
    sched.start()
    if voices is not None:
        voices.start()
    proc = psutil.Process()
    time.sleep(warmup)
    voice_thread = voices._thread.native_id if voices is not None and voices._thread is not None else None
    cpu0, t0, v0 = proc.cpu_times(), time.monotonic(), thread_cpu(proc, voice_thread)
    measuring[0] = True
    time.sleep(seconds)
    measuring[0] = False
    elapsed = time.monotonic() - t0
    cpu1, v1 = proc.cpu_times(), thread_cpu(proc, voice_thread)
    if voices is not None:
        voices.stop()
    sched.stop()
    for s in sources:
        s.stop()
    return {"analysed_fps": sum(counts.values()) / elapsed,
            "cpu": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed,
            "voice_passes": voices.passes if voices is not None else None, "load": psutil.getloadavg()[0],
            "voice_cpu": (v1 - v0) / elapsed if voice_thread is not None else None}


def thread_cpu(proc, native_id: int | None) -> float:
    """CPU seconds (user + system) the thread `native_id` of `proc` has used so far; 0 without one."""
    if native_id is None:
        return 0.0
    return next((t.user_time + t.system_time for t in proc.threads() if t.id == native_id), 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=5.0, help="target analysed fps per stream")
    parser.add_argument("--model", default="meso4-df")
    parser.add_argument("--voice-model", default="aasist")
    args = parser.parse_args()

    from engines.registry import build_engine
    from engines.voices import build_voice_engine

    tmp = Path(tempfile.mkdtemp(prefix="dfstream-voice-idle-"))
    videos = [make_720p30(SHARED_VIDEOS[i % len(SHARED_VIDEOS)], tmp / f"cam{i}.mp4") for i in range(args.streams)]
    engine = build_engine(args.model, weights_dir=MESONET, allow_download=False)
    voice = build_voice_engine(args.voice_model, weights_dir=AASIST, allow_download=False)
    sides: dict[str, list[dict]] = {"without": [], "with": []}
    for i in range(args.pairs):
        for side in ("without", "with"):
            got = run(videos, engine, [voice] if side == "with" else [], args.seconds, args.warmup, args.fps)
            sides[side].append(got)
            voice_cpu = f", voice thread {got['voice_cpu'] * 1000:.2f} ms CPU/s" if got["voice_cpu"] is not None else ""
            print(f"pair {i + 1} {side:>7} voice path: {got['analysed_fps']:.2f} analysed fps, CPU {got['cpu']:.2f} "
                  f"cores, voice passes {got['voice_passes']}{voice_cpu}, load average {got['load']:.1f}", flush=True)
        ratio = sides["with"][-1]["analysed_fps"] / sides["without"][-1]["analysed_fps"]
        print(f"pair {i + 1} ratio with/without: {ratio:.3f}", flush=True)
    mean = {k: float(np.mean([r["analysed_fps"] for r in v])) for k, v in sides.items()}
    idle = float(np.mean([r["voice_cpu"] for r in sides["with"]]))
    cpu = {k: float(np.mean([r["cpu"] for r in v])) for k, v in sides.items()}
    print(f"{args.streams} face-only streams, {args.model}, {args.pairs} runs each of {args.seconds:g} s: analysed fps "
          f"without {mean['without']:.2f}, with the idle voice path {mean['with']:.2f} "
          f"(ratio {mean['with'] / mean['without']:.3f}); CPU {cpu['without']:.2f} -> {cpu['with']:.2f} cores; "
          f"the idle voice thread used {idle * 1000:.2f} ms of CPU per second ({idle * 100:.3f} % of one core)")


if __name__ == "__main__":
    main()
