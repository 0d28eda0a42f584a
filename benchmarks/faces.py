"""MTCNN speed, torch nets vs ONNX Runtime nets, side by side in one run: ms per 720p frame.

    .venv/bin/python benchmarks/faces.py                      # batches of 1 and 4 720p frames, 15 repeats
    .venv/bin/python benchmarks/faces.py --threads 1          # ORT's nets on one thread (the overlapped pipeline)

Frames are shared FF++ clips decoded with PyAV and scaled to 1280x720 (as the live benchmark's cameras). Both
detectors run the same `FaceDetector` path (downscale to `max_side`, facenet-pytorch's pyramid and NMS); only
what runs the three nets differs. Repeats alternate torch and ORT so a noisy neighbour hits both alike; the
figures are medians. Also timed: re-locating one face on a 96² crop (the detection interval's cheap step).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's packages, not this folder's engines.py benchmark

import av
import numpy as np
import torch
from PIL import Image

SHARED_VIDEOS = sorted((ROOT.parent / "shared" / "data" / "ffpp-c23").glob("*/*.mp4"))
WIDTH, HEIGHT = 1280, 720


def frames_720p(count: int) -> list[np.ndarray]:
    out = []
    for video in SHARED_VIDEOS:
        with av.open(str(video)) as container:
            frame = next(container.decode(video=0))
        out.append(np.asarray(frame.to_image().resize((WIDTH, HEIGHT), Image.BILINEAR)))
        if len(out) == count:
            break
    return out


def main() -> None:
    from stream.config.faces import DetectorConfig
    from stream.live.faces import FaceDetector

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for both (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = frames_720p(max(args.batches))
    detectors = {name: FaceDetector(DetectorConfig(backend=name, threads=args.threads)) for name in ("torch", "onnx")}
    first = detectors["torch"].detect(frames[:1])[0]
    region = [(frames[0], first[0].box)] if first else []
    times: dict[tuple[str, str], list[float]] = {}
    with torch.inference_mode():
        for d in detectors.values():  # warm-up: ORT plans each new pyramid shape once
            for b in args.batches:
                d.detect(frames[:b])
            d.relocate(region)
        for _ in range(args.repeats):
            for name, d in detectors.items():
                for b in args.batches:
                    t = time.perf_counter()
                    d.detect(frames[:b])
                    times.setdefault((name, f"detect, batch {b}"), []).append((time.perf_counter() - t) * 1e3 / b)
                if region:
                    t = time.perf_counter()
                    d.relocate(region)
                    times.setdefault((name, "re-locate 1 face"), []).append((time.perf_counter() - t) * 1e3)
    print(f"MTCNN on {WIDTH}x{HEIGHT} frames (max_side {DetectorConfig().max_side}), median of {args.repeats}, "
          f"threads {args.threads or 'all'} of {torch.get_num_threads() if not args.threads else args.threads}")
    print(f"{'what':<22}{'torch ms/frame':>16}{'ORT ms/frame':>14}{'torch / ORT':>13}")
    for what in dict.fromkeys(w for _, w in times):
        t, o = statistics.median(times["torch", what]), statistics.median(times["onnx", what])
        print(f"{what:<22}{t:>16.1f}{o:>14.1f}{t / o:>12.2f}x")


if __name__ == "__main__":
    main()
