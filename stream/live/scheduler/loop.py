"""The one inference loop of `serve`.

Each pass takes the newest frame of every stream that is due (per-stream target of analysed frames per second),
runs MTCNN on all of them as one batch, updates each stream's tracker and per-track rings, and sends the crops of
all streams to each engine as one batch. Decoding happens on the sources' own threads, so a slow pass only
makes frames be dropped at the buffers, never delays decoding.

Under load (the loop busy more than `high_load` of the time) it lowers every stream's analysed rate by the same
factor, down to `min_fps`; only then does it shed whole streams, the most recently added first, and it restores
them (and then the rates) once the load predicted after a step up stays below `recover_load`. Status messages
say what it did.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engines.base import Engine
from stream.live.faces import FaceDetector, IoUTracker, crop_faces
from stream.live.sources.live import StreamSource
from stream.live.scheduler.stats import LatencyMeter, RateMeter
from stream.live.verdicts.alerts import AlertManager
from stream.live.rings import CropRing, ReadyWindow, TrackRings, WindowSpec
from stream.live.sources import Frame
from stream.live.verdicts.policy import TrackVerdict, VerdictPolicy, worst

log = logging.getLogger(__name__)

MESSAGE_VERSION = 1
CLIP_OVERLAP = 2  # clip engines get a new window every length / CLIP_OVERLAP face-frames
IDLE_WAIT_S = 0.005  # longest nap when nothing is due, so a due stream is picked up promptly
# When one stream is due, streams due within this fraction of their period join the same pass: otherwise streams
# drift apart and every pass carries a single frame, paying MTCNN's fixed cost once per stream.
COALESCE_FRACTION = 0.5
EVIDENCE_CROP = (224, 0.3)  # (size, margin) of the face crops kept for alert snapshots and clips
EVIDENCE_FRAMES = 16  # analysed face-frames per track kept for the alert clip

Publish = Callable[[dict[str, Any]], None]


class SchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_fps: float = Field(default=1.0, gt=0, description="analysed-rate floor before whole streams are shed")
    high_load: float = Field(default=0.9, gt=0, le=1, description="busy fraction above which rates are lowered")
    recover_load: float = Field(default=0.8, gt=0, le=1,
                                description="rates recover when the busy fraction predicted after the step stays "
                                            "below this")
    step_down: float = Field(default=0.8, gt=0, lt=1)
    step_up: float = Field(default=1.1, gt=1)
    adapt_period_s: float = Field(default=1.0, gt=0)
    load_smoothing: float = Field(default=0.5, gt=0, le=1,
                                  description="weight of the newest period in the smoothed load, so one slow "
                                              "second (a GC, a noisy neighbour) does not lower every rate")
    status_period_s: float = Field(default=1.0, gt=0)


@dataclass
class _Stream:
    source: StreamSource
    tracker: IoUTracker
    rings: TrackRings
    order: int
    next_due: float = 0.0
    shed: bool = False
    analysed: RateMeter = field(default_factory=RateMeter)
    latency: LatencyMeter = field(default_factory=LatencyMeter)
    scores: dict[int, dict[str, float]] = field(default_factory=dict)
    verdicts: dict[int, TrackVerdict] = field(default_factory=dict)
    evidence: dict[int, CropRing] = field(default_factory=dict)


def window_for(engine: Engine) -> WindowSpec:
    s = engine.spec
    return WindowSpec(size=s.size, margin=s.margin, length=s.frames, stride=max(1, s.frames // CLIP_OVERLAP))


class Scheduler:
    def __init__(self, detector: FaceDetector, engines: Sequence[Engine], publish: Publish,
                 config: SchedulerConfig | None = None, policy: VerdictPolicy | None = None,
                 alerts: AlertManager | None = None) -> None:
        self.policy = policy or VerdictPolicy()
        self.alerts = alerts
        self.detector = detector
        self.engines = list(engines)
        self.windows = {e.name: window_for(e) for e in self.engines}
        self.publish = publish
        self.config = config or SchedulerConfig()
        self.scale = 1.0
        self.utilisation = 0.0
        self.events: list[str] = []
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._added = 0

    # --- streams -------------------------------------------------------------------------------------------
    def add(self, source: StreamSource) -> None:
        with self._lock:
            if source.name in self._streams:
                raise ValueError(f"a stream named {source.name!r} already exists")
            self._added += 1
            self._streams[source.name] = _Stream(source, IoUTracker(), TrackRings(self.windows.values()),
                                                 order=self._added)

    def remove(self, name: str) -> StreamSource | None:
        with self._lock:
            st = self._streams.pop(name, None)
        if st is not None and self.alerts is not None:
            self.alerts.end_stream(name)
        return st.source if st else None

    def sources(self) -> list[StreamSource]:
        with self._lock:
            return [s.source for s in self._streams.values()]

    def target_fps(self, st: _Stream) -> float:
        return max(self.config.min_fps, st.source.analysed_fps * self.scale)

    # --- loop ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.alerts is not None:
            self.alerts.end_all()

    def _run(self) -> None:
        window_start = last_status = time.monotonic()
        busy = 0.0
        while not self._stop.is_set():
            picks = self._due(time.monotonic())
            if picks:
                t0 = time.monotonic()
                try:
                    self.process(picks)
                except Exception:  # one bad frame or engine error must not kill the live loop
                    log.exception("inference pass failed")
                busy += time.monotonic() - t0
            else:
                self._stop.wait(IDLE_WAIT_S)
            now = time.monotonic()
            if now - window_start >= self.config.adapt_period_s:
                self._adapt(busy / (now - window_start))
                window_start, busy = now, 0.0
            if now - last_status >= self.config.status_period_s:
                self.publish_status()
                last_status = now

    def _due(self, now: float) -> list[tuple[_Stream, Frame]]:
        with self._lock:
            streams = [s for s in self._streams.values() if not s.shed]
        if not any(now >= st.next_due for st in streams):
            return []
        picks = []
        for st in streams:
            period = 1.0 / self.target_fps(st)
            if now < st.next_due - COALESCE_FRACTION * period:
                continue
            frame = st.source.buffer.take_latest()
            if frame is not None:
                picks.append((st, frame))
                # A pass that starts a little late keeps the stream on its grid, or the analysed rate would fall
                # short of the target by the lateness; an early (coalesced) pick or one a period late restarts it.
                late = now - st.next_due
                st.next_due = (st.next_due if 0 <= late < period else now) + period
        return picks

    def _adapt(self, utilisation: float) -> None:
        """Lower all rates together under load, then shed streams; recover in the reverse order."""
        c = self.config
        self.utilisation = utilisation = c.load_smoothing * utilisation + (1 - c.load_smoothing) * self.utilisation
        with self._lock:
            active = [s for s in self._streams.values() if not s.shed]
            shed = [s for s in self._streams.values() if s.shed]
        floor = all(s.source.analysed_fps * self.scale <= c.min_fps for s in active)
        if utilisation > c.high_load:
            if not floor:
                self.scale *= c.step_down
                self._event(f"load {utilisation:.0%}: analysed rates lowered to {self.scale:.0%} of target")
            elif len(active) > 1:
                victim = max(active, key=lambda s: s.order)
                victim.shed = True
                self._event(f"load {utilisation:.0%} at the {c.min_fps} fps floor: stream {victim.source.name} "
                            "paused")
        elif utilisation * c.step_up < c.recover_load:
            if shed:
                back = min(shed, key=lambda s: s.order)
                back.shed = False
                self._event(f"load {utilisation:.0%}: stream {back.source.name} resumed")
            elif self.scale < 1.0:
                self.scale = min(1.0, self.scale * c.step_up)
                self._event(f"load {utilisation:.0%}: analysed rates raised to {self.scale:.0%} of target")

    def _event(self, text: str) -> None:
        log.info("scheduler: %s", text)
        self.events = (self.events + [text])[-10:]

    # --- one pass ------------------------------------------------------------------------------------------
    def process(self, picks: list[tuple[_Stream, Frame]]) -> None:
        """Detect, track, crop and score one frame per picked stream, then publish one overlay per frame."""
        detections = self.detector.detect([f.image for _, f in picks])
        keys = {w.crop_key for w in self.windows.values()} | {EVIDENCE_CROP}
        ready: list[tuple[_Stream, ReadyWindow]] = []
        faces_of = []
        for (st, frame), faces in zip(picks, detections):
            boxes = [d.box for d in faces]
            ids = st.tracker.update(boxes)
            st.rings.expire(st.tracker.expired)
            for tid in st.tracker.expired:
                st.scores.pop(tid, None)
                st.verdicts.pop(tid, None)
                st.evidence.pop(tid, None)
                if self.alerts is not None:
                    self.alerts.end(st.source.name, tid)
            crops = {key: crop_faces(frame.image, boxes, *key) for key in keys} if boxes else {}
            for j, tid in enumerate(ids):
                ready += [(st, w) for w in st.rings.push(tid, {k: c[j] for k, c in crops.items()})]
                ring = st.evidence.setdefault(tid, CropRing(EVIDENCE_FRAMES, EVIDENCE_CROP[0]))
                ring.push(crops[EVIDENCE_CROP][j])
            faces_of.append(list(zip(ids, faces)))
        for engine in self.engines:
            mine = [(st, w) for st, w in ready if w.spec == self.windows[engine.name]]
            if not mine:
                continue
            batch = np.stack([w.clip[0] if w.spec.length == 1 else w.clip for _, w in mine])
            for (st, w), p in zip(mine, engine.predict(batch)):
                st.scores.setdefault(w.track, {})[engine.name] = float(p)
        now = time.monotonic()
        for (st, frame), faces in zip(picks, faces_of):
            st.analysed.tick(now)
            st.latency.add(now - frame.received)
            self.publish(self._overlay(st, frame, faces, now))

    def _overlay(self, st: _Stream, frame: Frame, faces, now: float) -> dict[str, Any]:
        out = []
        for tid, det in faces:
            engines = dict(st.scores.get(tid, {}))
            tv = st.verdicts.setdefault(tid, TrackVerdict(self.policy))
            verdict = tv.update(engines)
            if self.alerts is not None:
                ring = st.evidence.get(tid)
                self.alerts.observe(st.source.name, tid, verdict, tv.smoothed, engines,
                                    evidence=(lambda r=ring: (r.recent()[-1], r.recent())) if ring else None)
            out.append({
                "track": tid,
                "box": [round(float(v), 1) for v in det.box],
                "prob": round(det.prob, 4),
                "score": tv.smoothed,
                "raw": self.policy.fuse(engines),
                "engines": engines,
                "verdict": verdict,
            })
        return {
            "v": MESSAGE_VERSION,
            "type": "overlay",
            "stream": st.source.name,
            "ts": time.time(),
            "pts": frame.pts,
            "time": frame.time,
            "frame_size": list(frame.size),
            "latency_ms": round((now - frame.received) * 1000.0, 1),
            "faces": out,
            "verdict": worst([tv.verdict for tv in st.verdicts.values()]),
        }

    def publish_status(self) -> None:
        with self._lock:
            streams = list(self._streams.values())
        for st in streams:
            self.publish({
                "v": MESSAGE_VERSION,
                "type": "status",
                "stream": st.source.name,
                "ts": time.time(),
                **st.source.status(),
                "analysed_fps": round(st.analysed.rate(), 2),
                "target_fps": round(self.target_fps(st), 2),
                "latency_ms": {"p50": st.latency.percentile_ms(50), "p95": st.latency.percentile_ms(95)},
                "shed": st.shed,
                "tracks": len(st.rings.tracks),
                "scheduler": {"scale": round(self.scale, 3), "load": round(self.utilisation, 3),
                              "events": self.events[-3:]},
            })
