"""The load governor: a pure decision, fed the scheduler's busy fraction once a period.

It returns what it decided as a `Decision` record; the scheduler applies it (pauses or resumes a stream). The
governor changes nothing but its own state (the smoothed load, the rates' scale, its recent decisions).
Under load (busy more than `high_load` of the time, smoothed over periods) it lowers every stream's analysed
rate by the same factor, down to `min_fps`; only then does it shed whole streams, the most recently added first.
It restores them (and then the rates) once the load predicted after a step up stays below `recover_load`.
The busy fraction is `BusyClock`'s busiest stage, so overlapped stages are not counted twice.
Lowering rates together is fair (every camera keeps its share); shedding the newest first keeps the cameras an
operator set up first. The governor reads no clock and runs no thread, so every decision can be tested step by
step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from stream.config.scheduler import SchedulerConfig

log = logging.getLogger(__name__)

EVENTS_KEPT = 10  # recent decisions kept for status messages


class Governed(Protocol):
    """What the governor sees of a stream."""

    @property
    def name(self) -> str: ...

    @property
    def order(self) -> int: ...  # when it was added: later streams are shed first

    @property
    def shed(self) -> bool: ...

    @property
    def analysed_fps(self) -> float: ...


Action = Literal["lower", "raise", "shed", "resume"]


@dataclass(frozen=True, slots=True)
class Decision:
    """One period's decision. `lower` and `raise` are already in the governor's `scale` (its own state); `shed`
    and `resume` name the `stream` the scheduler must pause or resume."""

    action: Action
    load: float  # the smoothed busy fraction it was decided on
    scale: float  # the rates' scale after it
    stream: str | None = None
    floor: float | None = None  # the min_fps floor a stream was shed at

    @property
    def text(self) -> str:
        """In words, for the log and the status messages."""
        if self.action == "lower":
            return f"load {self.load:.0%}: analysed rates lowered to {self.scale:.0%} of target"
        if self.action == "raise":
            return f"load {self.load:.0%}: analysed rates raised to {self.scale:.0%} of target"
        if self.action == "shed":
            return f"load {self.load:.0%} at the {self.floor} fps floor: stream {self.stream} paused"
        return f"load {self.load:.0%}: stream {self.stream} resumed"


class BusyClock:
    """The scheduler's load when its stages may overlap: the busy fraction of its busiest stage.

    Each stage (`serial`: the whole pass; `overlapped`: `detect` on the worker thread, `score` on the loop
    thread) reports the intervals it worked, and a period's load is the largest share of it that any one stage
    was busy. A stage waiting for work is idle; a stage that has work but is held back by the next one counts as
    busy (the pipeline is full then: with stage times that vary pass to pass, as full detections and cheap
    re-locations do, neither stage may be busy all the time at capacity).
    Why not the sum of the stages' time: with detection of the next pass overlapped with scoring of this one,
    their seconds add up to more than the wall time, so a sum would call a machine that has idle time overloaded
    and shed streams for nothing. A two-stage pipeline runs one pass per `max(detect, score)`, so it is full
    exactly when its busiest stage is busy all the time. Stages that share cores slow each other down, which
    shows in their measured (wall) times, so contention is counted too. With one stage this is the plain busy
    fraction it always was. Intervals (monotonic seconds) in, a fraction out; no clock is read here.

    Thread-safe: each stage reports from its own thread (the overlapped pipeline's detector worker and scorer)
    while the scheduler's thread takes the periods, so every call holds the clock's own lock."""

    def __init__(self) -> None:
        self._spans: dict[str, list[tuple[float, float]]] = {}
        self._open: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, start: float, end: float) -> None:
        """`stage` was busy from `start` to `end`."""
        if end > start:
            with self._lock:
                self._spans.setdefault(stage, []).append((start, end))

    def begin(self, stage: str, start: float) -> None:
        """`stage` is busy from `start` until `end(stage)`: a period that ends meanwhile counts it up to its end
        (a detection longer than a period would otherwise be missing from every period it spans but the last)."""
        with self._lock:
            self._open[stage] = start

    def end(self, stage: str, end: float) -> None:
        with self._lock:
            start = self._open.pop(stage, None)
            if start is not None and end > start:
                self._spans.setdefault(stage, []).append((start, end))

    def fraction(self, start: float, end: float, stage: str | None = None) -> float:
        """The share of [start, end] that `stage` (default: the busiest stage) was busy."""
        with self._lock:
            return self._fraction(start, end, stage)

    def _fraction(self, start: float, end: float, stage: str | None = None) -> float:
        if end <= start:
            return 0.0
        spans = {s: list(v) for s, v in self._spans.items()}
        for s, a in self._open.items():
            spans.setdefault(s, []).append((a, end))
        stages = [stage] if stage is not None else list(spans)
        return max((_covered(spans.get(s, []), start, end) for s in stages), default=0.0) / (end - start)

    def take(self, start: float, end: float) -> float:
        """`fraction(start, end)`, then forget what was before `end` (keeping the part of a span past it)."""
        with self._lock:
            out = self._fraction(start, end)
            self._spans = {s: [(max(a, end), b) for a, b in spans if b > end] for s, spans in self._spans.items()}
            self._open = {s: max(a, end) for s, a in self._open.items()}
        return out


def _covered(spans: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] inside the union of `spans`."""
    busy, reach = 0.0, start
    for a, b in sorted(spans):
        a, b = max(a, reach), min(b, end)
        if b > a:
            busy += b - a
            reach = b
    return busy


class LoadGovernor:
    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.scale = 1.0
        self.utilisation = 0.0
        self.events: list[str] = []

    def target_fps(self, analysed_fps: float) -> float:
        """A stream's analysed rate now: its own target scaled down under load, never below the floor."""
        return max(self.config.min_fps, analysed_fps * self.scale)

    def observe(self, utilisation: float, streams: Sequence[Governed]) -> Decision | None:
        """Take one period's busy fraction; decide to lower or raise the rates (applied to `scale` here) or to
        shed or resume one stream (for the caller to apply). Returns the decision (also kept, in words, in
        `events`), or None. The streams are only read."""
        c = self.config
        self.utilisation = utilisation = c.load_smoothing * utilisation + (1 - c.load_smoothing) * self.utilisation
        active = [s for s in streams if not s.shed]
        shed = [s for s in streams if s.shed]
        floor = all(s.analysed_fps * self.scale <= c.min_fps for s in active)
        if utilisation > c.high_load:
            if not floor:
                self.scale *= c.step_down
                return self._decided(Decision("lower", utilisation, self.scale))
            if len(active) > 1:
                victim = max(active, key=lambda s: s.order)
                return self._decided(Decision("shed", utilisation, self.scale, victim.name, c.min_fps))
        elif utilisation * c.step_up < c.recover_load:
            if shed:
                back = min(shed, key=lambda s: s.order)
                return self._decided(Decision("resume", utilisation, self.scale, back.name))
            if self.scale < 1.0:
                self.scale = min(1.0, self.scale * c.step_up)
                return self._decided(Decision("raise", utilisation, self.scale))
        return None

    def _decided(self, decision: Decision) -> Decision:
        log.info("scheduler: %s", decision.text)
        self.events = (self.events + [decision.text])[-EVENTS_KEPT:]
        return decision
