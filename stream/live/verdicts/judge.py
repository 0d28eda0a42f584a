"""Judging one analysed face: its engines' scores -> the track's rolling verdict -> the alert lifecycle.

Kept apart from building messages so the rules that decide what a face *is* (and whether someone is alerted)
live in one place, whatever the message looks like.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from stream.config.verdicts import VerdictPolicy
from stream.live.rings import CropRing
from stream.live.scoring import Gate, fuse
from stream.live.verdicts.alerts import AlertManager
from stream.live.verdicts.policy import TrackVerdict


LOW_QUALITY = "low-quality"  # a face below every engine's quality floor: never judged real or fake


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: str
    score: float | None  # smoothed, fused p(fake)
    raw: float | None  # this frame's fused p(fake), of the engines that may judge it
    reason: str | None = None  # why the face was not judged


class Judge:
    def __init__(self, policy: VerdictPolicy | None = None, alerts: AlertManager | None = None,
                 fusion: Callable[[Mapping[str, float]], float | None] | None = None) -> None:
        """`fusion` turns engine scores into one p(fake) (a stacked ensemble); default the policy's weighted mean."""
        self.policy = policy or VerdictPolicy()
        self.alerts = alerts
        self.fusion = fusion or (lambda scores: fuse(scores, self.policy.weights))

    def new_verdict(self) -> TrackVerdict:
        return TrackVerdict(self.policy, self.fusion)

    def judge(self, stream: str, track: int, state: TrackVerdict, scores: Mapping[str, float],
              evidence: CropRing | None = None, gate: Gate | None = None, at: float | None = None) -> Judgement:
        """Update the track's verdict with this frame's engine scores and tell the alert lifecycle.

        A face the gate calls low-quality leaves the verdict and any alert exactly as they were: it never counts
        toward the hysteresis, and never starts, updates or ends an alert. `at` is the frame's source time."""
        if gate is not None and gate.low_quality:
            return Judgement(LOW_QUALITY, state.smoothed, None, gate.reason)
        engines = gate.keep(scores) if gate is not None else dict(scores)
        verdict = state.update(engines)
        if self.alerts is not None:
            self.alerts.observe(stream, track, verdict, state.smoothed, engines,
                                evidence=(lambda r=evidence: (r.recent()[-1], r.recent())) if evidence else None,
                                at=at)
        return Judgement(verdict, state.smoothed, self.fusion(engines))

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
