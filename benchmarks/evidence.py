"""The recording ring's cost: what tapping packets adds to a source's decoding, what the webcam encoder costs per
frame, and the ring's memory for 5 s of video.

Run: .venv/bin/python benchmarks/evidence.py [--video PATH] [--repeats 5]

What is measured (time.perf_counter, CPU only, side by side in one run, alternating so a load change lands on
both): decoding the whole file with `AVSource.frames()` as `serve` does, without and with the packet tap into a
`PacketRing` (the Annex B filter and the copy of every packet); the median of `--repeats` runs of each and their
ratio. Then `FrameEncoder`'s H.264 ultrafast on the file's first 150 frames (mean ms per frame), and the ring's
bytes and seconds once the file has passed through it with `pre_capture_s` = 5.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's packages, not this folder's engines.py benchmark

from stream.live.evidence.encoder import FrameEncoder  # noqa: E402
from stream.live.evidence.recorder import RING_SLACK_S  # noqa: E402
from stream.live.evidence.ring import PacketRing  # noqa: E402
from stream.live.sources import AVSource, Frame  # noqa: E402

DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "ffpp-c23" / "fake" / "Deepfakes_519_515.mp4"
PRE_CAPTURE_S = 5.0


def decode(video: Path, ring: PacketRing | None) -> float:
    t0 = time.perf_counter()
    for _ in AVSource(video, on_packet=ring.push if ring is not None else None).frames():
        pass
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    plain, tapped = [], []
    ring = PacketRing(PRE_CAPTURE_S + RING_SLACK_S, 64 << 20)
    for _ in range(args.repeats):
        plain.append(decode(args.video, None))
        ring = PacketRing(PRE_CAPTURE_S + RING_SLACK_S, 64 << 20)
        tapped.append(decode(args.video, ring))
    p, t = statistics.median(plain), statistics.median(tapped)
    print(f"decode {args.video.name}: plain {p * 1000:.0f} ms, with the packet tap {t * 1000:.0f} ms "
          f"(x{t / p:.3f})")
    st = ring.status()
    print(f"ring after the file (pre_capture_s={PRE_CAPTURE_S:g} + slack {RING_SLACK_S:g}): {st['bytes'] / 1e6:.2f} MB,"
          f" {st['seconds']:.1f} s in {st['gops']} GOP(s)")

    with av.open(str(args.video)) as src:
        frames = [Frame(vf.to_ndarray(format="rgb24"), vf.pts, float(vf.time), i, 0.0)
                  for i, vf in enumerate(src.decode(video=0)) if i < 150]
    out = PacketRing(PRE_CAPTURE_S, 64 << 20)
    enc = FrameEncoder("bench", out.push)
    t0 = time.perf_counter()
    for f in frames:
        enc._queue.put(f)  # blocking, unlike submit(): every frame is encoded
    enc.close(timeout=120)
    per_frame = (time.perf_counter() - t0) / len(frames)
    w, h = frames[0].size
    st = out.status()
    print(f"webcam encoder ({w}x{h}, H.264 ultrafast): {per_frame * 1000:.1f} ms/frame over {len(frames)} frames "
          f"(mean, encoder start included); ring {st['bytes'] / 1e6:.2f} MB for {st['seconds']:.1f} s")


if __name__ == "__main__":
    main()
