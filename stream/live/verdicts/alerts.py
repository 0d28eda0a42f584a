"""The alert lifecycle: start / update / end per fake track, with a stable id, an idempotency key per message
and evidence (a snapshot at the start, a clip of the recent window).

An alert starts when a track's verdict turns "fake", sends an update at most every `update_every_s` while it
stays fake and its peak score rises, and ends when the track returns to "real" or leaves the picture (or its
stream stops). "uncertain" neither starts nor ends an alert: hysteresis already decided it is not settled.

With a recorder, an alert also gets a full-frame recording (evidence/recorder.py). Its `end` message then waits
until the recording is complete (the post-roll, at most `post_capture_s` of stream time, or at once when the
stream is gone), because it carries the chain of custody: every evidence file's sha256. A recording completed
while the alert is still open (it reached `max_clip_s`) is announced by an `update` with the custody instead.
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

from stream.live.evidence.recorder import Recorder
from stream.live.evidence.store import EvidenceStore
from stream.messages import Alert, AlertEvent


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
    recording: bool = False  # a recording is being written
    ended_at: float | None = None
    custody: dict[str, Any] | None = None


class AlertManager:
    def __init__(self, emit: Callable[[dict[str, Any]], None], evidence: EvidenceStore | None = None,
                 policy: AlertPolicy | None = None, recorder: Recorder | None = None) -> None:
        self.emit = emit
        self.evidence = evidence
        self.policy = policy or AlertPolicy()
        self.recorder = recorder
        self.active: dict[tuple[str, int], _Active] = {}
        self._lock = threading.RLock()  # recordings complete on the evidence thread

    def observe(self, stream: str, track: int, verdict: str, score: float | None, engines: dict[str, float],
                evidence: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None, at: float | None = None) -> None:
        """Feed one analysed face; `evidence()` returns (snapshot crop, recent crops) and is called at start only;
        `at` is the frame's source time (where a recording's pre-roll is counted from)."""
        key = (stream, track)
        alert = self.active.get(key)
        if alert is None:
            if verdict == "fake":
                self._start(stream, track, score or 0.0, engines, evidence, at)
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
               at: float | None) -> None:
        alert_id = uuid.uuid4().hex
        files: dict[str, str | None] = {"snapshot": None, "clip": None}
        if self.evidence is not None and evidence is not None:
            snapshot, clip = evidence()
            snap, mp4 = self.evidence.save(alert_id, snapshot, clip)
            files = {"snapshot": str(snap), "clip": str(mp4) if mp4 else None}
        alert = _Active(alert_id, stream, track, time.time(), score, dict(engines), files, last_seen=at)
        with self._lock:
            if self.recorder is not None and at is not None:
                paths = self.recorder.start(alert_id, stream, track, at, lambda c, a=alert: self._recorded(a, c))
                if paths is not None:
                    alert.recording = True
                    files.update(paths, recording_state="recording")
            self.active[(stream, track)] = alert
            self._send(alert, "start")

    def end(self, stream: str, track: int) -> None:
        alert = self.active.pop((stream, track), None)
        if alert is None:
            return
        with self._lock:
            alert.ended_at = time.time()
            if not alert.recording:
                self._send(alert, "end", ended_at=alert.ended_at)
                return
        self.recorder.end(alert.id, alert.last_seen)  # type: ignore[union-attr]  # the end follows in _recorded

    def _recorded(self, alert: _Active, custody: dict[str, Any]) -> None:
        """The recording is complete (evidence thread): `end` now if the alert has ended, else an `update`."""
        with self._lock:
            alert.recording, alert.custody = False, custody
            alert.evidence["recording_state"] = "complete" if "recording.mp4" in custody["files"] else "none"
            if alert.ended_at is not None:
                self._send(alert, "end", ended_at=alert.ended_at)
            else:
                self._send(alert, "update")

    def end_stream(self, stream: str) -> None:
        for s, t in [k for k in self.active if k[0] == stream]:
            self.end(s, t)

    def end_all(self) -> None:
        for s, t in list(self.active):
            self.end(s, t)

    def _send(self, alert: _Active, event: AlertEvent, ended_at: float | None = None) -> None:
        with self._lock:
            alert.seq += 1
            alert.last_update = time.monotonic()
            self.emit(Alert(event=event, id=alert.id, seq=alert.seq, stream=alert.stream, track=alert.track,
                            started_at=alert.started_at, ended_at=ended_at, score_max=alert.score_max,
                            engines=alert.engines, evidence=dict(alert.evidence),
                            custody=alert.custody).to_message())
