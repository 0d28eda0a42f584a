"""The alert lifecycle with a recording, on a real source's ring: a recording cut by max_clip_s while the alert is
open is announced by an update with the custody, and the later end carries it at once; an alert that ends waits
for its post-roll before its end message."""

from __future__ import annotations

import time

import numpy as np

from stream.config.evidence import EvidencePolicy
from stream.config.verdicts import AlertPolicy
from stream.live.bus import MessageBus
from stream.live.evidence.recorder import Recorder
from stream.live.evidence.store import EvidenceStore
from stream.live.server.wiring import wire_evidence
from stream.live.sources.live import AVLiveSource, SourceConfig
from stream.live.verdicts.alerts import AlertManager
from stream.messages import Alert

from support.shared import FFPP

CROPS = np.zeros((3, 64, 64, 3), np.uint8)


def evidence():
    return CROPS[-1], CROPS


def newest(recorder) -> float:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if recorder.ring("df").newest is not None:
            return recorder.ring("df").newest
        time.sleep(0.05)
    raise AssertionError("no packets reached the ring")


def run(tmp_path, policy: EvidencePolicy, steps):
    store = EvidenceStore(tmp_path, policy)
    bus, msgs = MessageBus(), []
    recorder = Recorder(store, {"dfstream": "test"}, bus.publish)
    manager = AlertManager(bus.publish, AlertPolicy(update_every_s=100), store.layout)
    wire_evidence(bus, manager, recorder)
    bus.subscribe(Alert, msgs.append, wire=True)
    source = AVLiveSource(SourceConfig(name="df", url=str(FFPP / "fake" / "Deepfakes_519_515.mp4")))
    recorder.attach(source)
    source.start()
    try:
        steps(manager, recorder, msgs)
    finally:
        source.stop()
        recorder.close()
        store.close()
    return msgs


def wait(msgs, pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(pred(m) for m in msgs):
        time.sleep(0.05)
    return next((m for m in msgs if pred(m)), None)


def test_max_clip_completes_while_open_then_end_carries_the_custody(tmp_path):
    def steps(manager, recorder, msgs):
        at = newest(recorder)
        manager.observe("df", 1, "fake", 0.9, {"m": 0.9}, evidence, at=at)
        update = wait(msgs, lambda m: m["event"] == "update")
        assert update is not None, [m["event"] for m in msgs]
        assert update["evidence"]["recording_state"] == "complete" and update["custody"]["cut"] == "max_clip_s"
        duration = update["custody"]["recording"]["duration"]
        assert duration <= 2.0 + 1e-6  # max_clip_s
        manager.observe("df", 1, "real", 0.1, {"m": 0.1}, evidence, at=at + 3)
        assert msgs[-1]["event"] == "end" and msgs[-1]["custody"] == update["custody"]  # at once: nothing to wait for

    msgs = run(tmp_path, EvidencePolicy(pre_capture_s=1.0, post_capture_s=1.0, max_clip_s=2.0), steps)
    assert [m["event"] for m in msgs] == ["start", "update", "end"]
    assert [m["seq"] for m in msgs] == [1, 2, 3]


def test_end_waits_for_the_post_roll(tmp_path):
    def steps(manager, recorder, msgs):
        at = newest(recorder)
        manager.observe("df", 1, "fake", 0.9, {"m": 0.9}, evidence, at=at)
        manager.observe("df", 1, "real", 0.1, {"m": 0.1}, evidence, at=at + 0.2)
        ended = time.monotonic()
        assert [m["event"] for m in msgs] == ["start"]  # the end waits for the recording
        end = wait(msgs, lambda m: m["event"] == "end")
        assert end is not None and end["evidence"]["recording_state"] == "complete"
        assert time.monotonic() - ended >= 1.0  # post_capture_s of a paced file
        rec = end["custody"]["recording"]
        assert rec["clip_start_source_time"] + rec["duration"] >= at + 0.2 + 1.5 - 0.1  # ran through the post-roll
        assert end["custody"]["cut"] is None

    run(tmp_path, EvidencePolicy(pre_capture_s=1.0, post_capture_s=1.5), steps)


def test_a_closed_alert_on_a_stalled_stream_ends_by_the_evidence_thread_timetable(tmp_path):
    """The stream sends no packet after the alert closed (a file that ended, its tap still attached): nothing
    reaches the post-roll, so the evidence thread completes the recording `post_capture_s + STALL_SLACK_S` later,
    on its own timetable (no timer thread per alert), and the end carries the custody of a stalled stream."""
    import threading

    from stream.live.evidence.recorder import STALL_SLACK_S
    from stream.live.sources import SourceState

    policy = EvidencePolicy(pre_capture_s=1.0, post_capture_s=1.0)
    store = EvidenceStore(tmp_path, policy)
    bus, msgs = MessageBus(), []
    recorder = Recorder(store, {"dfstream": "test"}, bus.publish)
    manager = AlertManager(bus.publish, AlertPolicy(update_every_s=100), store.layout)
    wire_evidence(bus, manager, recorder)
    bus.subscribe(Alert, msgs.append, wire=True)
    source = AVLiveSource(SourceConfig(name="df", url=str(FFPP / "real" / "004.mp4"), pace=False))
    recorder.attach(source)
    source.start()
    try:
        deadline = time.monotonic() + 60
        while source.state is not SourceState.ENDED and time.monotonic() < deadline:
            source.buffer.take_latest()  # the unpaced file waits for its consumer
            time.sleep(0.001)
        assert source.state is SourceState.ENDED
        last = recorder.ring("df").newest
        manager.observe("df", 1, "fake", 0.9, {"m": 0.9}, evidence, at=last - 0.5)
        manager.observe("df", 1, "real", 0.1, {"m": 0.1}, evidence, at=last)
        closed = time.monotonic()
        assert [m["event"] for m in msgs] == ["start"]  # the end waits for the recording's custody
        assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
        end = wait(msgs, lambda m: m["event"] == "end")
        assert end is not None and end["custody"]["cut"] == "stream stalled"
        assert end["evidence"]["recording_state"] == "complete"  # the pre-roll it had is recorded
        assert time.monotonic() - closed >= policy.post_capture_s + STALL_SLACK_S - 0.5
    finally:
        source.stop()
        recorder.close()
        store.close()
