"""Alert lifecycle from real detections: the shared Deepfakes video raises start / update / end with evidence."""

import time

import av
import numpy as np
import pytest
from PIL import Image

from engines.registry import DEFAULT_MODEL, build_engine
from stream.config.evidence import EvidencePolicy
from stream.live.bus import MessageBus
from stream.live.evidence.recorder import Recorder
from stream.live.evidence.store import EvidenceStore
from stream.live.server.wiring import wire_evidence
from stream.live.verdicts.alerts import AlertManager, AlertPolicy
from stream.messages import WIRE
from stream.live.faces import FaceDetector
from stream.live.sources.buffer import LatestFrameBuffer
from stream.live.scheduler.loop import Scheduler
from stream.live.sources.live import StreamSource
from stream.live.sources import AVSource
from stream.live.verdicts.policy import VerdictPolicy

from support.shared import FFPP, MESONET_WEIGHTS


def wired(store: EvidenceStore, policy: AlertPolicy) -> tuple[MessageBus, AlertManager, list[dict]]:
    """A bus with the lifecycle and the evidence recorder wired as serve wires them, and what leaves it."""
    bus, msgs = MessageBus(), []
    manager = AlertManager(bus.publish, policy, store.layout)
    wire_evidence(bus, manager, Recorder(store, {}, bus.publish))
    bus.subscribe(WIRE, msgs.append, wire=True)
    return bus, manager, msgs


def test_lifecycle_start_update_end_with_stable_id(tmp_path):
    store = EvidenceStore(tmp_path)
    _, manager, msgs = wired(store, AlertPolicy(update_every_s=0.01))
    crops = np.random.default_rng(0).integers(0, 255, (6, 224, 224, 3), dtype=np.uint8)
    ev = lambda: (crops[-1], crops)  # noqa: E731
    manager.observe("cam", 1, "uncertain", 0.6, {"m": 0.6}, ev)
    assert msgs == []  # uncertain starts nothing
    manager.observe("cam", 1, "fake", 0.8, {"m": 0.8}, ev)
    time.sleep(0.02)
    manager.observe("cam", 1, "fake", 0.9, {"m": 0.9}, ev)
    manager.observe("cam", 1, "fake", 0.85, {"m": 0.85}, ev)  # lower peak: no update
    manager.observe("cam", 1, "uncertain", 0.5, {"m": 0.5}, ev)  # not settled: alert stays open
    manager.observe("cam", 1, "real", 0.1, {"m": 0.1}, ev)
    assert [m["event"] for m in msgs] == ["start", "update", "end"]
    assert len({m["id"] for m in msgs}) == 1 and len({m["key"] for m in msgs}) == 3
    assert msgs[-1]["score_max"] == 0.9 and msgs[-1]["ended_at"] >= msgs[0]["started_at"]
    store.flush()
    snap, clip = msgs[0]["evidence"]["snapshot"], msgs[0]["evidence"]["clip"]
    assert Image.open(snap).size == (224, 224)
    with av.open(clip) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) == 6


def test_evidence_retention(tmp_path):
    store = EvidenceStore(tmp_path, EvidencePolicy(max_alerts=3))
    img = np.zeros((64, 64, 3), np.uint8)
    for i in range(6):
        store.save(f"a{i}", img, np.zeros((0, 64, 64, 3), np.uint8))
        store.flush()
        time.sleep(0.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a3", "a4", "a5"]


class _FileFeed(StreamSource):
    """Feeds every decoded frame of a file into the buffer, as fast as the scheduler takes them."""

    def __init__(self, name, path):
        super().__init__(name, str(path), LatestFrameBuffer(), 1000.0)
        self.frames = list(AVSource(path, sample_fps=5).frames())

    def start(self):
        pass

    def stop(self):
        pass


@pytest.mark.slow
def test_deepfakes_video_raises_alert_with_evidence(tmp_path):
    store = EvidenceStore(tmp_path)
    bus, manager, msgs = wired(store, AlertPolicy(update_every_s=0.5))
    engine = build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)
    sched = Scheduler(FaceDetector(), [engine], bus.publish, policy=VerdictPolicy(), alerts=manager)
    feed = _FileFeed("df", FFPP / "fake" / "Deepfakes_519_515.mp4")
    st = sched.add(feed)
    for frame in feed.frames[:60]:
        sched.process([(st, frame)])
    sched.stop()  # ends open alerts
    alerts = [m for m in msgs if m["type"] == "alert"]
    assert alerts and alerts[0]["event"] == "start" and alerts[-1]["event"] == "end"
    assert alerts[0]["score_max"] >= VerdictPolicy().t_high
    store.flush()
    assert Image.open(alerts[0]["evidence"]["snapshot"]).size == (224, 224)
    with av.open(alerts[0]["evidence"]["clip"]) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 3


def test_one_alerts_messages_leave_in_seq_order_whichever_thread_ends_it():
    """`observe` on the scheduler's thread while another thread ends the stream's alerts (a stream removed through
    the API): each alert starts first, ends once and last, and its seq runs 1..n in the order published."""
    import threading

    from stream.messages import Alert

    bus, records = MessageBus(), []
    bus.subscribe(Alert, records.append)
    manager = AlertManager(bus.publish, AlertPolicy(update_every_s=1e-6))  # every rise of the peak is an update
    stop = threading.Event()

    def remover() -> None:
        while not stop.is_set():
            manager.end_stream("cam")

    thread = threading.Thread(target=remover)
    thread.start()
    try:
        for i in range(4000):
            manager.observe("cam", i % 3, "fake", 0.5 + i * 1e-4, {"m": 0.5})
    finally:
        stop.set()
        thread.join()
    manager.end_all()
    by_id: dict[str, list[Alert]] = {}
    for r in records:
        by_id.setdefault(r.id, []).append(r)
    assert len(by_id) > 3  # the remover did end alerts while they were being observed
    for alert_id, life in by_id.items():
        events = [r.event for r in life]
        assert [r.seq for r in life] == list(range(1, len(life) + 1)), alert_id
        assert events[0] == "start" and events[-1] == "end" and events.count("end") == 1, events
