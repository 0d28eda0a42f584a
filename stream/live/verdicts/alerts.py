"""The alert lifecycle: start / update / end per fake track, with a stable id, an idempotency key per message
and evidence (a snapshot at the start, a clip of the recent window).

An alert starts when a track's verdict turns "fake", sends an update at most every `update_every_s` while it
stays fake and its peak score rises, and ends when the track returns to "real" or leaves the picture (or its
stream stops). "uncertain" neither starts nor ends an alert: hysteresis already decided it is not settled.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.config.verdicts import AlertPolicy

from stream.live.verdicts.evidence import EvidenceStore
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


class AlertManager:
    def __init__(self, emit: Callable[[dict[str, Any]], None], evidence: EvidenceStore | None = None,
                 policy: AlertPolicy | None = None) -> None:
        self.emit = emit
        self.evidence = evidence
        self.policy = policy or AlertPolicy()
        self.active: dict[tuple[str, int], _Active] = {}

    def observe(self, stream: str, track: int, verdict: str, score: float | None, engines: dict[str, float],
                evidence: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """Feed one analysed face; `evidence()` returns (snapshot crop, recent crops) and is called at start only."""
        key = (stream, track)
        alert = self.active.get(key)
        if alert is None:
            if verdict == "fake":
                self._start(stream, track, score or 0.0, engines, evidence)
            return
        if verdict == "real":
            self.end(stream, track)
            return
        if score is not None and score > alert.score_max:
            alert.score_max, alert.engines = score, dict(engines)
            if time.monotonic() - alert.last_update >= self.policy.update_every_s:
                self._send(alert, "update")

    def _start(self, stream: str, track: int, score: float, engines: dict[str, float], evidence) -> None:
        alert_id = uuid.uuid4().hex
        files: dict[str, str | None] = {"snapshot": None, "clip": None}
        if self.evidence is not None and evidence is not None:
            snapshot, clip = evidence()
            snap, mp4 = self.evidence.save(alert_id, snapshot, clip)
            files = {"snapshot": str(snap), "clip": str(mp4) if mp4 else None}
        alert = _Active(alert_id, stream, track, time.time(), score, dict(engines), files)
        self.active[(stream, track)] = alert
        self._send(alert, "start")

    def end(self, stream: str, track: int) -> None:
        alert = self.active.pop((stream, track), None)
        if alert is not None:
            self._send(alert, "end", ended_at=time.time())

    def end_stream(self, stream: str) -> None:
        for s, t in [k for k in self.active if k[0] == stream]:
            self.end(s, t)

    def end_all(self) -> None:
        for s, t in list(self.active):
            self.end(s, t)

    def _send(self, alert: _Active, event: AlertEvent, ended_at: float | None = None) -> None:
        alert.seq += 1
        alert.last_update = time.monotonic()
        self.emit(Alert(event=event, id=alert.id, seq=alert.seq, stream=alert.stream, track=alert.track,
                        started_at=alert.started_at, ended_at=ended_at, score_max=alert.score_max,
                        engines=alert.engines, evidence=alert.evidence).to_message())
