"""The loopback RTSP server the live-source tests rely on: it streams the real video at real time to several
clients, a kill makes it unreachable at once, and a restart serves again on the same URL."""

from __future__ import annotations

import time

import av
import pytest
from support.rtsp_server import rtsp_server  # noqa: F401  (fixture)

RTSP_OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000"}  # TCP as `serve` uses it; 5 s socket timeout
MIN_FRAMES = 20
WARMUP_S = 2.0  # frames buffered while av.open probes the stream arrive in a burst; read past them first
PACE_WINDOW_S = 3.0  # then this many seconds of frames, timed from a frame the client had to wait for...
# ...must take at least PACE_FAST of their stream time: they come paced, like a camera, not as a file dump. Load
# cannot break this bound: once the client has caught up (it waited for a frame), no frame can arrive before
# the server has made it, and a busy client only arrives later. The upper bound only catches a stalled or
# crawling server; it is generous because a loaded two-core machine slows the encoder and the client's decoder.
# (The project has no RTSP throughput benchmark; benchmarks/live.py measures the live pipeline's rates.)
PACE_FAST = 0.75
PACE_SLOW = 3.0
CAUGHT_UP_GAP = 0.5  # a frame that took this fraction of a frame interval to arrive: the client had waited
CONNECT_FAIL_S = 5.0  # after stop(), opening must fail within this


def _decode(url: str, count: int, container=None):
    """Decode `count` frames from `url`; returns (last frame, seconds taken, open container)."""
    container = container or av.open(url, options=RTSP_OPTIONS)
    t0 = time.monotonic()
    for i, frame in enumerate(container.decode(video=0), 1):
        if i == count:
            return frame, time.monotonic() - t0, container
    raise AssertionError(f"stream ended after {i} frames")


def _paced_window(container, fps: float, count: int) -> tuple[float, float]:
    """From the first frame the client had to wait for (nothing buffered was left), the wall time the next `count`
    frames took, and their stream time (pts) span."""
    frames = container.decode(video=0)
    last = time.monotonic()
    for waited, frame in enumerate(frames):
        now = time.monotonic()
        if now - last >= CAUGHT_UP_GAP / fps:
            break
        last = now
        assert waited < 30 * fps, "the client never had to wait for a frame in 30 s of stream: not paced"
    t0, pts0 = now, frame.time
    for i, frame in enumerate(frames, 1):
        if i == count:
            return time.monotonic() - t0, frame.time - pts0
    raise AssertionError(f"stream ended after {i} frames")


@pytest.mark.slow  # over 6 s in the fast tier (pytest --fast --durations=30, 2026-12-08)
def test_streams_real_time_to_two_clients_dies_and_restarts(rtsp_server):  # noqa: F811
    server = rtsp_server
    with av.open(str(server.video)) as src:
        stream = src.streams.video[0]
        size, fps = (stream.width, stream.height), float(stream.average_rate)

    first, _, client = _decode(server.url, max(MIN_FRAMES, round(WARMUP_S * fps)))
    assert (first.width, first.height) == size
    paced = round(PACE_WINDOW_S * fps)
    took, span = _paced_window(client, fps, paced)
    # the frames carry the source's rate: pts at least 1/fps apart (a busy server may skip frames, never crowd
    # them), and no more stream time than a crawling server would take...
    assert 0.95 <= span / (paced / fps) <= PACE_SLOW, f"{paced} frames span {span:.2f} s of stream at {fps} fps"
    # ...and arrive at real time: never faster, and not crawling
    ratio = took / (paced / fps)
    assert PACE_FAST <= ratio <= PACE_SLOW, f"{paced} frames took {took:.2f} s at {fps} fps"

    with av.open(server.url, options=RTSP_OPTIONS) as second:  # shared media: a second camera client
        frame, _, _ = _decode(server.url, MIN_FRAMES, second)
        assert (frame.width, frame.height) == size
    client.close()

    server.stop()
    t0 = time.monotonic()
    with pytest.raises(OSError):  # av's errors are OSErrors; here ConnectionRefusedError
        av.open(server.url, options=RTSP_OPTIONS)
    assert time.monotonic() - t0 < CONNECT_FAIL_S

    server.restart()
    frame, _, client = _decode(server.url, MIN_FRAMES)
    client.close()
    assert (frame.width, frame.height) == size
