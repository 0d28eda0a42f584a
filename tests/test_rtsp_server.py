"""The loopback RTSP server the live-source tests rely on: it streams the real video at real time to several
clients, a kill makes it unreachable at once, and a restart serves again on the same URL."""

from __future__ import annotations

import time

import av
import pytest
from rtsp_server import rtsp_server  # noqa: F401  (fixture)

RTSP_OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000"}  # TCP as `serve` uses it; 5 s socket timeout
MIN_FRAMES = 20
WARMUP_S = 2.0  # frames buffered while av.open probes the stream arrive in a burst; read past them first
PACE_WINDOW_S = 2.0  # then this many seconds of frames must take about that long to arrive
PACE_TOLERANCE = (0.75, 1.5)  # measured/expected wall time for the paced window
CONNECT_FAIL_S = 5.0  # after stop(), opening must fail within this


def _decode(url: str, count: int, container=None):
    """Decode `count` frames from `url`; returns (last frame, seconds taken, open container)."""
    container = container or av.open(url, options=RTSP_OPTIONS)
    t0 = time.monotonic()
    for i, frame in enumerate(container.decode(video=0), 1):
        if i == count:
            return frame, time.monotonic() - t0, container
    raise AssertionError(f"stream ended after {i} frames")


def test_streams_real_time_to_two_clients_dies_and_restarts(rtsp_server):  # noqa: F811
    server = rtsp_server
    with av.open(str(server.video)) as src:
        stream = src.streams.video[0]
        size, fps = (stream.width, stream.height), float(stream.average_rate)

    first, _, client = _decode(server.url, max(MIN_FRAMES, round(WARMUP_S * fps)))
    assert (first.width, first.height) == size
    paced = round(PACE_WINDOW_S * fps)
    _, took, client = _decode(server.url, paced, client)
    ratio = took / (paced / fps)
    assert PACE_TOLERANCE[0] <= ratio <= PACE_TOLERANCE[1], f"{paced} frames took {took:.2f} s at {fps} fps"

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
