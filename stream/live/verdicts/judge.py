"""Judging one analysed face: its engines' scores -> the track's rolling verdict -> the alert lifecycle.

Kept apart from building messages so the rules that decide what a face *is* (and whether someone is alerted)
live in one place, whatever the message looks like.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stream.config.verdicts import VerdictPolicy
from stream.live.rings import CropRing
from stream.live.scoring import fuse
from stream.live.verdicts.alerts import AlertManager
from stream.live.verdicts.policy import TrackVerdict


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: str
    score: float | None  # smoothed, fused p(fake)
    raw: float | None  # this frame's fused p(fake)


class Judge:
    def __init__(self, policy: VerdictPolicy | None = None, alerts: AlertManager | None = None) -> None:
        self.policy = policy or VerdictPolicy()
        self.alerts = alerts

    def new_verdict(self) -> TrackVerdict:
        return TrackVerdict(self.policy)

    def judge(self, stream: str, track: int, state: TrackVerdict, scores: Mapping[str, float],
              evidence: CropRing | None = None) -> Judgement:
        """Update the track's verdict with this frame's engine scores and tell the alert lifecycle."""
        engines = dict(scores)
        verdict = state.update(engines)
        if self.alerts is not None:
            self.alerts.observe(stream, track, verdict, state.smoothed, engines,
                                evidence=(lambda r=evidence: (r.recent()[-1], r.recent())) if evidence else None)
        return Judgement(verdict, state.smoothed, fuse(engines, self.policy.weights))

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
