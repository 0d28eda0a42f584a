"""Judging one analysed face: its engines' scores -> the track's rolling verdict -> the alert lifecycle.

Kept apart from building messages so the rules that decide what a face *is* (and whether someone is alerted)
live in one place, whatever the message looks like.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from stream.config.verdicts import VerdictPolicy
from stream.live.rings import CropRing
from stream.live.scoring import Fusion, Gate
from stream.live.verdicts.alerts import AlertManager
from stream.live.verdicts.policy import TrackVerdict


LOW_QUALITY = "low-quality"  # a face below every engine's quality floor: never judged real or fake


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: str
    score: float | None  # smoothed, fused p(fake)
    raw: float | None  # this frame's fused p(fake), of the engines that may judge it
    reason: str | None = None  # why the face was not judged


class Judged(Protocol):
    """What the judge reads of a track (the scheduler's `Track` record): its latest face-frame's engine scores and
    quality gate, its rolling verdict (which the judge updates) and its recent crops (alert evidence)."""

    @property
    def stream(self) -> str: ...

    @property
    def id(self) -> int: ...

    @property
    def verdict(self) -> TrackVerdict: ...

    @property
    def scores(self) -> Mapping[str, float]: ...

    @property
    def evidence(self) -> CropRing | None: ...

    @property
    def gate(self) -> Gate | None: ...

    @property
    def seen_at(self) -> float | None: ...  # the face-frame's source time


class Judge:
    def __init__(self, policy: VerdictPolicy | None = None, alerts: AlertManager | None = None,
                 fusion: Fusion | None = None) -> None:
        """`fusion` is the scorer's (a stacked ensemble, or the policy's weighted mean when none is given)."""
        self.policy = policy or VerdictPolicy()
        self.alerts = alerts
        self.fusion = fusion or Fusion(self.policy.weights)

    def new_verdict(self) -> TrackVerdict:
        return TrackVerdict(self.policy)

    def judge(self, track: Judged) -> Judgement:
        """Update the track's verdict with its latest face-frame's engine scores and tell the alert lifecycle.

        A face the gate calls low-quality leaves the verdict and any alert exactly as they were: it never counts
        toward the hysteresis, and never starts, updates or ends an alert. The scores are fused once, here."""
        state, gate = track.verdict, track.gate
        if gate is not None and gate.low_quality:
            return Judgement(LOW_QUALITY, state.smoothed, None, gate.reason)
        engines = gate.keep(track.scores) if gate is not None else dict(track.scores)
        raw = self.fusion(engines)
        verdict = state.update(raw)
        if self.alerts is not None:
            evidence = track.evidence
            self.alerts.observe(track.stream, track.id, verdict, state.smoothed, engines,
                                evidence=(lambda r=evidence: (r.recent()[-1], r.recent())) if evidence else None,
                                at=track.seen_at)
        return Judgement(verdict, state.smoothed, raw)

    def track_lost(self, stream: str, track: int) -> None:
        if self.alerts is not None:
            self.alerts.end(stream, track)

    def stream_removed(self, stream: str) -> None:
        if self.alerts is not None:
            self.alerts.end_stream(stream)

    def close(self) -> None:
        """End every open alert (the pipeline is stopping)."""
        if self.alerts is not None:
            self.alerts.end_all()
