"""The load governor: a pure decision, fed the scheduler's busy fraction once a period.

It returns what it decided as a `Decision` record; the scheduler applies it (pauses or resumes a stream). The
governor changes nothing but its own state (the smoothed load, the rates' scale, its recent decisions).
Under load (more than `high_load`, smoothed over periods) it lowers analysed rates by `step_down` a period, the
least important streams' first (`rank`: a browser's own webcam or shared screen, then a camera with relay viewers,
then one nobody watches; then the higher `priority`), down to `min_fps`, then pauses them (the newest first among
equals), and only then touches a more important stream's rate. The last stream is never paused. It restores them
the other way round, the most important first, once the load predicted after a step up stays below
`recover_load`.
Trade-off: the person at the browser keeps their rate while less important cameras slow down and then stop being
analysed (their video still plays); a low-priority camera can stay paused for as long as the machine is full.
The load is what `SchedulerConfig.load` names (`load_of`): by default the busiest stage's busy share (`BusyClock`)
capped by the share of the machine's CPU time in use (`CpuClock` over psutil's system times), so the machine is
called full only when the pipeline is full and its cores are too; or the process's own CPU time per core; or the
busiest stage alone. The governor reads no clock and runs no thread, so every decision can be tested step
by step.
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
# A stream analysed at less than this share of its target rate is short of it: then the less important streams are
# slowed (to the floor, not paused) even below `high_load`, and none of them gets its rate back meanwhile. Why:
# the load is a whole-machine average, and a watched stream can fall short while it says "not full" (passes shared
# with streams riding along, CPU taken by other processes). Trade-off: a measured rate is noisy over a second, so a
# stream must be clearly short (15 %) before others pay for it.
SHORTFALL = 0.85


class Governed(Protocol):
    """What the governor sees of a stream."""

    @property
    def name(self) -> str: ...

    @property
    def order(self) -> int: ...  # when it was added: among equals, later streams are shed first

    @property
    def priority(self) -> int: ...  # higher keeps its rate longer (SourceConfig.priority)

    @property
    def attention(self) -> int: ...  # how closely it is followed: 2 a browser's webcam or screen, 1 relay viewers

    @property
    def shed(self) -> bool: ...

    @property
    def analysed_fps(self) -> float: ...  # its own target (SourceConfig.analysed_fps)

    # Optional, read with getattr: `achieved_fps`, its measured analysed rate now; a stream that has one can be
    # short of its target (`SHORTFALL`).


Action = Literal["lower", "raise", "shed", "resume"]


@dataclass(frozen=True, slots=True)
class Decision:
    """One period's decision. `lower` and `raise` are already in the governor's `scale` (its own state); `shed`
    and `resume` name the `stream` the scheduler must pause or resume."""

    action: Action
    load: float  # the smoothed load it was decided on
    scale: float  # the scale of the rates it changed, after it (for shed/resume: the governor's lowest)
    stream: str | None = None
    floor: float | None = None  # the min_fps floor a stream was shed at
    streams: tuple[str, ...] = ()  # lower/raise: the streams whose rates changed (every one of one rank)

    @property
    def text(self) -> str:
        """In words, for the log and the status messages."""
        which = f" of {', '.join(self.streams)}" if self.streams else ""
        if self.action == "lower":
            return f"load {self.load:.0%}: analysed rates{which} lowered to {self.scale:.0%} of target"
        if self.action == "raise":
            return f"load {self.load:.0%}: analysed rates{which} raised to {self.scale:.0%} of target"
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


class CpuClock:
    """CPU seconds per core per wall second over each period: the process's (`time.process_time`: decoders, colour
    conversions, the relay's encoders, every stage; `cores` its affinity) or the machine's (busy and total CPU
    seconds of all processes from psutil, `cores` 1: the total already counts every core). Times in, a fraction
    out."""

    def __init__(self, cores: int) -> None:
        self.cores = max(1, cores)
        self._mark: tuple[float, float] | None = None  # (wall, cpu) at the last take

    def take(self, wall: float, cpu: float) -> float:
        """The load since the last take (0.0 at the first), and start the next period at (`wall`, `cpu`)."""
        mark, self._mark = self._mark, (wall, cpu)
        if mark is None or wall <= mark[0]:
            return 0.0
        return max(0.0, cpu - mark[1]) / (wall - mark[0]) / self.cores


Measure = Literal["cores", "process", "stage"]


def load_of(measure: Measure, stage: float, process: float, machine: float) -> float:
    """One period's load by the named measure (`SchedulerConfig.load`).

    - `cores` (default): `min(stage, machine)`. A stage's wall time counts waiting for a core or the GIL as busy,
      and each overlapped stage has only part of the machine, so its busiest stage at 100 % can leave a third of
      a core idle: capped by the machine's CPU, that is not load. A full machine (both cores busy, with this
      process's work or another's) with a full pipeline is: then the least important streams slow down, so a
      watched webcam keeps its rate even on a shared machine. Trade-off: another process's work can make this
      one shed, which is what keeps its latency bounded there.
    - `process`: this process's CPU per core alone. Blind to other processes: on a shared machine every stream
      falls short of its target together, and nothing decides who waits.
    - `stage`: the busiest stage alone, the measure before issue 25: it sheds with cores idle."""
    if measure == "cores":
        return min(stage, machine)
    if measure == "process":
        return process
    if measure == "stage":
        return stage
    raise ValueError(f"unknown load measure {measure!r}; choose cores, process or stage")


def _covered(spans: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] inside the union of `spans`."""
    busy, reach = 0.0, start
    for a, b in sorted(spans):
        a, b = max(a, reach), min(b, end)
        if b > a:
            busy += b - a
            reach = b
    return busy


def rank(stream: Governed) -> tuple[int, int]:
    """How long a stream keeps its rate under load: by attention first (a browser's own webcam or screen, then a
    stream with relay viewers, then one nobody watches: `sources.live.Attention`), then by `priority`."""
    return int(stream.attention), int(stream.priority)


class LoadGovernor:
    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.scales: dict[str, float] = {}  # per stream: the share of its target rate it is given now (1.0: all)
        self.reasons: dict[str, str] = {}  # per stream slowed or paused: why, in words
        self.utilisation = 0.0
        self.events: list[str] = []

    @property
    def scale(self) -> float:
        """The lowest stream's scale (1.0 when no stream is slowed)."""
        return min(self.scales.values(), default=1.0)

    def scale_of(self, name: str) -> float:
        return self.scales.get(name, 1.0)

    def target_fps(self, analysed_fps: float, name: str | None = None) -> float:
        """A stream's analysed rate now: its own target scaled down under load, never below the floor (`name`
        None: at the lowest stream's scale)."""
        scale = self.scale if name is None else self.scale_of(name)
        return max(self.config.min_fps, analysed_fps * scale)

    def forget(self, name: str) -> None:
        """A removed stream's scale and reason go with it."""
        self.scales.pop(name, None)
        self.reasons.pop(name, None)

    def observe(self, utilisation: float, streams: Sequence[Governed]) -> Decision | None:
        """Take one period's load; decide to lower or raise some streams' rates (applied to `scales` here) or to
        shed or resume one stream (for the caller to apply). Returns the decision (also kept, in words, in
        `events`), or None. The streams are only read."""
        c = self.config
        self.utilisation = utilisation = c.load_smoothing * utilisation + (1 - c.load_smoothing) * self.utilisation
        active = [s for s in streams if not s.shed]
        shed = [s for s in streams if s.shed]
        above = [s for s in active if s.analysed_fps * self.scale_of(s.name) > c.min_fps]
        short = self._short_of_target(active)
        if short is not None and utilisation <= c.high_load:
            # a more important stream falls short of its rate: the less important ones above the floor make room
            lower = [s for s in above if rank(s) < short]
            if lower:
                least = min(rank(s) for s in lower)
                names = tuple(s.name for s in lower if rank(s) == least)
                for n in names:
                    self.scales[n] = self.scale_of(n) * c.step_down
                    self.reasons[n] = self._slowed_reason(utilisation, n, least, streams)
                return self._decided(Decision("lower", utilisation, self.scale_of(names[0]), streams=names))
        if utilisation > c.high_load:
            least = min((rank(s) for s in above), default=None)
            below = [s for s in active if least is None or rank(s) < least]  # all at the floor already
            if least is not None and not below:
                names = tuple(s.name for s in above if rank(s) == least)
                for n in names:
                    self.scales[n] = self.scale_of(n) * c.step_down
                for n in names:
                    self.reasons[n] = self._slowed_reason(utilisation, n, least, streams)
                return self._decided(Decision("lower", utilisation, self.scale_of(names[0]), streams=names))
            if len(active) > 1:
                victim = min(below or active, key=lambda s: (rank(s), -s.order))
                self.reasons[victim.name] = (f"paused at load {utilisation:.0%}: at the {c.min_fps} fps floor and "
                                             f"the least important ({_rank_words(rank(victim))}); more important "
                                             f"streams keep their rate")
                return self._decided(Decision("shed", utilisation, self.scale, victim.name, c.min_fps))
        elif utilisation * c.step_up < c.recover_load:
            # nothing ranked below a stream that falls short of its rate gets its rate back
            slowed = [s for s in active if self.scale_of(s.name) < 1.0 and (short is None or rank(s) >= short)]
            shed = [s for s in shed if short is None or rank(s) >= short]
            if not shed and not slowed:
                return None
            best = max(rank(s) for s in (*shed, *slowed))
            back = [s for s in shed if rank(s) == best]
            if back:
                stream = min(back, key=lambda s: s.order)
                self.reasons[stream.name] = self._slowed_reason(utilisation, stream.name, best, streams)
                return self._decided(Decision("resume", utilisation, self.scale, stream.name))
            names = tuple(s.name for s in slowed if rank(s) == best)
            for n in names:
                self.scales[n] = min(1.0, self.scale_of(n) * c.step_up)
                if self.scales[n] >= 1.0:
                    del self.scales[n]
                    self.reasons.pop(n, None)
                else:
                    self.reasons[n] = self._slowed_reason(utilisation, n, best, streams)
            return self._decided(Decision("raise", utilisation, self.scale_of(names[0]), streams=names))
        return None

    def _short_of_target(self, active: Sequence[Governed]) -> tuple[int, int] | None:
        """The highest rank with a stream analysed at less than `SHORTFALL` of its target now (None: none), among
        streams with a measured rate (a stream still connecting has none)."""
        short = [rank(s) for s in active if getattr(s, "achieved_fps", None)
                 and s.achieved_fps < SHORTFALL * self.target_fps(s.analysed_fps, s.name)]
        return max(short, default=None)

    def _slowed_reason(self, load: float, name: str, its_rank: tuple[int, int], streams: Sequence[Governed]) -> str:
        above = sum(1 for s in streams if rank(s) > its_rank)
        kept = f"; {above} more important stream(s) keep their rate" if above else ""
        return (f"slowed to {self.scale_of(name):.0%} of its target at load {load:.0%} "
                f"({_rank_words(its_rank)}){kept}")

    def _decided(self, decision: Decision) -> Decision:
        log.info("scheduler: %s", decision.text)
        self.events = (self.events + [decision.text])[-EVENTS_KEPT:]
        return decision


ATTENTION_WORDS = {0: "not watched", 1: "watched through the relay", 2: "a browser's own webcam or screen"}


def _rank_words(r: tuple[int, int]) -> str:
    return f"{ATTENTION_WORDS.get(r[0], f'attention {r[0]}')}, priority {r[1]}"
