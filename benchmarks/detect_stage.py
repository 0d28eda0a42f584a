"""The detection stage alone: wall time of each pass of N 720p streams, one batch on one thread against the pass split
among detection workers, with and without staggered full detections, interleaved pass by pass.

    .venv/bin/python benchmarks/detect_stage.py                  # 8 streams, 40 passes, 1 and 2 workers
    .venv/bin/python benchmarks/detect_stage.py --workers 1 2 4 --passes 60

Each setup has its own scheduler (its own tracks and detection interval) over the same decoded frames (every third
frame of the shared FF++ clips, scaled to 1280x720 as the live benchmark's cameras); one shared MTCNN on ORT, as
`serve` builds it. Pass k of every setup runs before pass k+1 of any, so a noisy neighbour hits all of them alike.
Printed per setup: the pass time's mean, median, p95 and max (after the first three passes), full detections in
all, and full detections per pass. The p95 of the pass time is what a frame's latency pays for detection.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's packages, not this folder's engines.py benchmark

import av
import numpy as np

SHARED_VIDEOS = sorted((ROOT.parent / "shared" / "data" / "ffpp-c23").glob("*/*.mp4"))
WIDTH, HEIGHT = 1280, 720
SKIPPED = 3  # first passes left out: every stream's first full detection and the sessions' warm-up


def clips(streams: int, passes: int) -> list[list[av.VideoFrame]]:
    """Every third decoded frame of a shared clip per stream (streams past the clips reuse them from another
    offset), scaled to 720p; a clip shorter than `passes` is played again."""
    out = []
    for k in range(streams):
        with av.open(str(SHARED_VIDEOS[k % len(SHARED_VIDEOS)])) as container:
            frames = [f.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
                      for i, f in zip(range(3 * passes + 2), container.decode(video=0))
                      if i % 3 == (k // len(SHARED_VIDEOS)) % 3]
        out.append(frames)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--passes", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="detection workers to compare")
    args = parser.parse_args()

    from stream.config.faces import DetectorConfig
    from stream.config.scheduler import DetectionPolicy, SchedulerConfig
    from stream.live.faces import FaceDetector
    from stream.live.scheduler.loop import Scheduler
    from stream.live.scheduler.pipelines import DetectWorkers
    from stream.live.scheduler.threads import plan_threads
    from stream.live.sources import Frame
    from stream.live.sources.buffer import LatestFrameBuffer
    from stream.live.sources.live import StreamSource
    from stream.live.sources.picture import Picture

    class Feed(StreamSource):
        def __init__(self, name: str) -> None:
            super().__init__(name, name, LatestFrameBuffer(), 5.0)

        def start(self) -> None:
            pass

        def stop(self) -> None:
            pass

    frames = clips(args.streams, args.passes)
    detector = FaceDetector(DetectorConfig())
    detector.set_threads(plan_threads("overlapped").detector)
    setups = {}
    for workers in args.workers:
        for staggered in (False, True):
            sched = Scheduler(detector, [], lambda record: None,
                              SchedulerConfig(detection=DetectionPolicy(stagger=staggered)))
            streams = [sched.add(Feed(f"cam{k}")) for k in range(args.streams)]
            name = f"{workers} worker(s), {'staggered' if staggered else 'in phase'}"
            setups[name] = (sched, streams, DetectWorkers(sched, workers), [], [])
    for k in range(args.passes):
        for sched, streams, pool, times, fulls in setups.values():
            picks = [(st, Frame(Picture(video=frames[j][k % len(frames[j])]), k, k / 5, k, 0.0))
                     for j, st in enumerate(streams)]
            fulls.append(sum(p.full for p in sched.plan_detection(picks)))
            began = time.perf_counter()
            found = pool.detect(picks)
            times.append(time.perf_counter() - began)
            sched.track(picks, found)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.streams} x {WIDTH}x{HEIGHT}, "
          f"{args.passes} passes, MTCNN on {detector.config.runs_on}; 1-min load average "
          f"{__import__('os').getloadavg()[0]:.1f}")
    print("| setup | pass ms mean | p50 | p95 | max | full detections | full detections per pass (first 9) |")
    print("|---|---|---|---|---|---|---|")
    for name, (sched, streams, pool, times, fulls) in setups.items():
        t = np.array(times[SKIPPED:]) * 1000
        print(f"| {name} | {t.mean():.0f} | {np.median(t):.0f} | {np.percentile(t, 95):.0f} | {t.max():.0f} | "
              f"{sum(st.full_detections for st in streams)} | {fulls[:9]} |")
        pool.close()


if __name__ == "__main__":
    main()
