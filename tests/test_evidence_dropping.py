"""The one bounded, dropping worker both evidence encoders run on: the producer never waits, overflow is counted,
items are handled in order, a failing item is skipped and logged, and close() drains what was queued."""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from stream.live.evidence.audio_encoder import QUEUE_CHUNKS, AudioEncoder
from stream.live.evidence.dropping import DroppingWorker
from stream.live.evidence.encoder import QUEUE_FRAMES, FrameEncoder
from stream.live.sources import AudioChunk, Frame


class Gated(DroppingWorker[int]):
    WHAT = "handling a test item"

    def __init__(self, capacity: int) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.seen: list[int] = []
        super().__init__("gated", "gated-worker", capacity)

    def _handle(self, item: int) -> None:
        self.started.set()
        self.gate.wait(10)
        if item == 2:
            raise ValueError("a bad item")
        self.seen.append(item)


def test_a_stalled_worker_drops_and_counts_overflow_never_blocks_and_keeps_order(caplog):
    w = Gated(capacity=3)
    w.submit(0)
    assert w.started.wait(5)  # item 0 is being handled: the queue is empty again
    t0 = time.monotonic()
    for i in range(1, 8):
        w.submit(i)
    assert time.monotonic() - t0 < 0.5  # submit never waits on the worker
    assert w.pending == 3 and w.dropped == 4  # 1, 2, 3 queued; 4..7 dropped
    w.gate.set()
    w.close()
    assert w.seen == [0, 1, 3]  # in order; the failing item 2 skipped, the worker went on
    assert "gated: handling a test item failed" in caplog.text
    assert not w._thread.is_alive()


def _chunk(k: int, rate: int = 48000, n: int = 960) -> AudioChunk:
    t = k * 0.02
    frame = av.AudioFrame.from_ndarray(np.zeros((1, n), np.int16), format="s16", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = rate, None, Fraction(1, rate)
    return AudioChunk(frame, t, time.monotonic())


def _frame(i: int) -> Frame:
    return Frame(np.full((96, 128, 3), i % 255, np.uint8), i * 3000, i / 30, i, 0.0)


@pytest.mark.parametrize("make, item, bound", [(AudioEncoder, _chunk, QUEUE_CHUNKS),
                                               (FrameEncoder, _frame, QUEUE_FRAMES)], ids=["aac", "h264"])
def test_each_encoder_drops_at_its_own_bound_when_its_consumer_stalls(make, item, bound):
    gate = threading.Event()
    got: list = []

    def slow(packet) -> None:  # the ring stalls: the worker is held inside its first packet
        got.append(packet)
        gate.wait(10)

    enc = make("cam", slow)
    k = 0
    while not got and k < 400:  # AAC emits its first packet after a few chunks
        enc.submit(item(k))
        k += 1
        time.sleep(0.005)
    assert got, "the encoder never produced a packet"
    waiting = enc.pending  # the worker is held: what is queued stays queued
    for i in range(bound + 25):
        enc.submit(item(k + i))
    assert enc.pending == bound and enc.dropped == 25 + waiting
    gate.set()
    enc.close()
    assert enc.pending == 0 and len(got) > 1
