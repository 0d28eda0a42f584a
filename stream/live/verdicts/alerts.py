"""The alert lifecycle: start / update / end per fake track, with a stable id and an idempotency key per message.
It decides and publishes; it writes no file and starts no recording (the evidence recorder subscribes for that).

An alert starts when a track's verdict turns "fake" (a face track's, or a stream's voice: `modality` "voice",
track `VOICE_TRACK`, which the voice thread feeds like the scheduler feeds faces), sends an update at most every `update_every_s` while it
stays fake and its peak score rises, and ends when the track returns to "real" or leaves the picture (or its
stream stops). "uncertain" neither starts nor ends an alert: hysteresis already decided it is not settled.

Evidence: the `start` names where the evidence will be (`EvidenceLayout`, evidence/names.py) and carries, in
process only, the face crops it was raised on and the source time of its first fake frame; the recorder writes
them. With recording on, an alert's `end` carries the chain of custody (every evidence file's sha256), so a
closing alert whose recording is still running is announced in process only (`AlertClosing`: the recorder then
records the post-roll) and its `end` is sent when the recorder's answer (`Custody`) arrives. A recording that
completes while the alert is still open (it reached `max_clip_s`) is announced by an `update` with the custody.

Threads: `observe` and `end` run on the scheduler's thread (faces) and the voice thread (voices), `end_stream` also on whoever removes a stream (the
event loop), `amend` on the evidence thread. One lock guards the open and closing alerts, and every message is
published under it, so one alert's messages leave in `seq` order whichever thread sends them (subscribers are
quick and never call back into the lifecycle on their thread: answers come later, from the evidence thread).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.config.verdicts import AlertPolicy
from stream.live.evidence.names import EvidenceLayout
from stream.messages import Alert, AlertClosing, AlertEvent, Custody, Modality

Publish = Callable[[Any], None]  # a record to the bus (MessageBus.publish)


@dataclass
class _Active:
    id: str
    stream: str
    track: int
    started_at: float
    score_max: float
    engines: dict[str, float]
    evidence: dict[str, str | None]
    seq: int = 0
    last_update: float = field(default_factory=time.monotonic)
    last_seen: float | None = None  # source time of its latest analysed frame
    recording: bool = False  # a recording is being written: its custody is awaited
    ended_at: float | None = None
    custody: dict[str, Any] | None = None
    modality: Modality = "face"


class AlertManager:
    def __init__(self, publish: Publish, policy: AlertPolicy | None = None,
                 layout: EvidenceLayout | None = None) -> None:
        """`layout`: where evidence goes and whether alerts are recorded (None: no evidence at all)."""
        self.publish = publish
        self.policy = policy or AlertPolicy()
        self.layout = layout
        self._active: dict[tuple[str, int], _Active] = {}  # open alerts by (stream, track)
        self._closing: dict[str, _Active] = {}  # ended alerts whose custody is awaited, by id
        self._lock = threading.RLock()

    def open_alerts(self) -> list[tuple[str, int]]:
        """(stream, track) of every open alert."""
        with self._lock:
            return list(self._active)

    def observe(self, stream: str, track: int, verdict: str, score: float | None, engines: dict[str, float],
                evidence: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None, at: float | None = None,
                modality: Modality = "face", sound: Callable[[], Any] | None = None) -> None:
        """Feed one analysed face (or a stream's judged voice window, `modality` "voice"); `evidence()` returns
        (snapshot crop, recent crops) and `sound()` a voice's scored windows, each called at start only; `at` is the
        frame's (window end's) source time (where a recording's pre-roll is counted from)."""
        with self._lock:
            alert = self._active.get((stream, track))
            if alert is None:
                if verdict == "fake":
                    self._start(stream, track, score or 0.0, engines, evidence, at, modality, sound)
                return
            alert.last_seen = at if at is not None else alert.last_seen
            if verdict == "real":
                self.end(stream, track)
                return
            if score is not None and score > alert.score_max:
                alert.score_max, alert.engines = score, dict(engines)
                if time.monotonic() - alert.last_update >= self.policy.update_every_s:
                    self._send(alert, "update")

    def _start(self, stream: str, track: int, score: float, engines: dict[str, float], evidence,
               at: float | None, modality: Modality = "face", sound: Callable[[], Any] | None = None) -> None:
        alert_id = uuid.uuid4().hex
        faces = evidence() if self.layout is not None and evidence is not None else None
        windows = sound() if self.layout is not None and sound is not None else None
        recording = self.layout is not None and self.layout.record and at is not None
        files = self.layout.files(alert_id, face=faces is not None, strip=faces is not None and len(faces[1]) > 0,
                                  recording=recording, voice=windows is not None) \
            if self.layout is not None else {"snapshot": None, "clip": None}
        alert = _Active(alert_id, stream, track, time.time(), score, dict(engines), files, last_seen=at,
                        recording=recording, modality=modality)
        self._active[(stream, track)] = alert
        self._send(alert, "start", at=at, faces=faces, sound=windows)

    def end(self, stream: str, track: int) -> None:
        """The track is gone or real again: `end` now, or, while its recording runs, once its custody is in."""
        with self._lock:
            alert = self._active.pop((stream, track), None)
            if alert is None:
                return
            alert.ended_at = time.time()
            if not alert.recording:
                self._send(alert, "end")
                return
            self._closing[alert.id] = alert
            self.publish(AlertClosing(alert.id, alert.stream, alert.last_seen))

    def amend(self, answer: Custody) -> None:
        """The recorder's answer (evidence thread): `end` a closing alert, `update` an open one with the custody."""
        with self._lock:
            alert = self._closing.pop(answer.alert_id, None)
            if alert is None:
                alert = next((a for a in self._active.values() if a.id == answer.alert_id), None)
            if alert is None or not alert.recording:
                return
            alert.recording, alert.custody = False, answer.custody
            if "recording_state" in alert.evidence:
                alert.evidence["recording_state"] = answer.recording_state
            if alert.ended_at is not None:
                self._send(alert, "end")
            elif answer.custody is not None:
                self._send(alert, "update")

    def end_stream(self, stream: str) -> None:
        for s, t in [k for k in self.open_alerts() if k[0] == stream]:
            self.end(s, t)

    def end_all(self) -> None:
        for s, t in self.open_alerts():
            self.end(s, t)

    def _send(self, alert: _Active, event: AlertEvent, at: float | None = None, faces: Any = None,
              sound: Any = None) -> None:
        """Publish the alert's next message (with the lock held: one alert's messages leave in seq order)."""
        alert.seq += 1
        alert.last_update = time.monotonic()
        self.publish(Alert(event=event, id=alert.id, seq=alert.seq, stream=alert.stream, track=alert.track,
                           started_at=alert.started_at, ended_at=alert.ended_at if event == "end" else None,
                           score_max=alert.score_max, engines=alert.engines, evidence=dict(alert.evidence),
                           custody=alert.custody, modality=alert.modality, at=at, faces=faces, sound=sound))
