"""Judging one analysed face: its engines' scores -> the track's rolling verdict -> the alert lifecycle.

Kept apart from building messages so the rules that decide what a face *is* (and whether someone is alerted)
live in one place, whatever the message looks like. A stream with a camera baseline is judged at its camera's bar
(`bars`, stream/live/verdicts/cameras.py); every judged face is announced to `on_judged` subscribers (a camera
learning its baseline live collects them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from stream.config.verdicts import VerdictPolicy
from stream.live.listeners import Listeners
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


@dataclass(frozen=True, slots=True)
class JudgedFace:
    """One face-frame as the judge fused it: the engine scores it fused (those the quality gate kept), or None
    for a low-quality face (with the gate's `reason`). What a camera's baseline is learned from."""

    stream: str
    track: int
    engines: Mapping[str, float] | None
    reason: str | None = None


class Bars(Protocol):
    """Each stream's verdict policy: the global one, or its camera baseline's (cameras.CameraBars)."""

    def policy_for(self, stream: str) -> VerdictPolicy: ...


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
                 fusion: Fusion | None = None, bars: Bars | None = None) -> None:
        """`fusion` is the scorer's (a stacked ensemble, or the policy's weighted mean when none is given); `bars`
        gives a stream with a camera baseline its own policy (None: every stream has the global one)."""
        self.policy = policy or VerdictPolicy()
        self.alerts = alerts
        self.fusion = fusion or Fusion(self.policy.weights)
        self.bars = bars
        self._judged: Listeners[JudgedFace] = Listeners("judged face")

    def new_verdict(self) -> TrackVerdict:
        return TrackVerdict(self.policy)

    def on_judged(self, fn: Callable[[JudgedFace], None]) -> Callable[[], None]:
        """Call `fn(JudgedFace)` for every face judged (or gated), on the scheduler's thread; returns the
        unsubscriber. `fn` must be quick: it runs inside the pass."""
        return self._judged.subscribe(fn)

    def judge(self, track: Judged) -> Judgement:
        """Update the track's verdict with its latest face-frame's engine scores and tell the alert lifecycle.

        A face the gate calls low-quality leaves the verdict and any alert exactly as they were: it never counts
        toward the hysteresis, and never starts, updates or ends an alert. The scores are fused once, here."""
        state, gate = track.verdict, track.gate
        if self.bars is not None:  # the camera's bar from the next update on, also for a track already open
            state.policy = self.bars.policy_for(track.stream)
        if gate is not None and gate.low_quality:
            if self._judged:
                self._judged.notify(JudgedFace(track.stream, track.id, None, gate.reason))
            return Judgement(LOW_QUALITY, state.smoothed, None, gate.reason)
        engines = gate.keep(track.scores) if gate is not None else dict(track.scores)
        if self._judged and engines:
            self._judged.notify(JudgedFace(track.stream, track.id, engines))
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
