"""How the scheduler's pass runs on threads: `serial` or `overlapped`, two strategies behind one interface.

The pass itself (pick due streams, detect, track, score, publish) is the scheduler's (`loop.py`); a pipeline only
decides which thread runs which step and when, and measures each stage's busy time on its own `BusyClock` for the
load governor. `pipeline_for(config.pipeline, steps)` picks one; the scheduler calls `open()` before its thread
starts, `run(stop)` on that thread, and `close()` after it has ended.

- `SerialPipeline`: each pass detects, tracks and scores on the scheduler's thread; its load is the busy share of
  the whole pass. Every core serves one step at a time.
- `OverlappedPipeline`: a worker thread ("scheduler-detect") picks due streams and detects the next pass's faces
  while the scheduler's thread tracks and scores the previous one; the thread pools share or split the cores
  (`threads.plan_threads`). Trade-off: each stage is slower when both run than in the serial pipeline (they share
  the cores); the gain is detection's time hidden under scoring's. The default since issue 25.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Protocol

from stream.live.scheduler.detection import split
from stream.live.scheduler.governor import BusyClock
from stream.live.scheduler.threads import apply_threads, plan_threads

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.005  # longest nap when nothing is due, so a due stream is picked up promptly
HANDOFF_WAIT_S = 0.1  # the overlapped worker re-checks for a stop this often while the scorer is busy
WORKER_JOIN_S = 10 * HANDOFF_WAIT_S  # how long the scorer waits for the worker to see a stop


class Steps(Protocol):
    """What a pipeline drives: the scheduler's pass, cut into its steps. The `Scheduler` implements it."""

    detector: Any
    engines: Sequence[Any]

    def streams(self) -> list[Any]: ...
    def due(self, now: float, skip: Collection[str] = ()) -> list[Any]: ...
    def process(self, picks: Sequence[Any]) -> None: ...
    def plan_detection(self, picks: Sequence[Any]) -> list[Any]: ...
    def detect(self, picks: Sequence[Any], plan: Sequence[Any] | None = None) -> list[list[Any]]: ...
    def track(self, picks: Sequence[Any], detections: Sequence[Sequence[Any]]) -> list[Any]: ...
    def score(self, picks: Sequence[Any], tracked: Sequence[Any]) -> None: ...
    def tick(self, clock: BusyClock) -> None: ...


class Pipeline(Protocol):
    """One way to run the pass on threads."""

    name: str
    clock: BusyClock  # its stages' busy time, which the scheduler hands the governor each period

    def open(self) -> None: ...
    def run(self, stop: threading.Event) -> None: ...
    def close(self) -> None: ...


def pipeline_for(name: str, steps: Steps, threads: str = "shared", detect_workers: int | None = None) -> Pipeline:
    """The named pipeline (`SchedulerConfig.pipeline`) over `steps`; `threads`: the overlapped stages' thread plan
    (`SchedulerConfig.threads`); `detect_workers`: its detection threads (`SchedulerConfig.detect_workers`; None:
    the plan's)."""
    if name == "overlapped":
        return OverlappedPipeline(steps, threads, detect_workers)
    if name == "serial":
        return SerialPipeline(steps)
    raise ValueError(f"unknown pipeline {name!r}; choose serial or overlapped")


class SerialPipeline:
    """Detect, track and score one pass at a time on the scheduler's thread. Its one stage is `pass`."""

    name = "serial"

    def __init__(self, steps: Steps) -> None:
        self.steps = steps
        self.clock = BusyClock()

    def open(self) -> None:
        """Nothing to size: the steps take turns, so each may use every core."""

    def close(self) -> None:
        pass

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            picks = self.steps.due(time.monotonic())
            if picks:
                t0 = time.monotonic()
                try:
                    self.steps.process(picks)
                except Exception:  # one bad frame or engine error must not kill the live loop
                    log.exception("inference pass failed")
                self.clock.add("pass", t0, time.monotonic())
            else:
                stop.wait(IDLE_WAIT_S)
            self.steps.tick(self.clock)


class InFlight:
    """Streams picked for a pass that is not tracked yet: the detector must not pick them again until then.
    Written by both stages of the overlapped pipeline, so it keeps its own lock."""

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def add(self, names: Iterable[str]) -> None:
        with self._lock:
            self._names.update(names)

    def discard(self, names: Iterable[str]) -> None:
        with self._lock:
            self._names.difference_update(names)

    def snapshot(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._names)


class DetectWorkers:
    """Detects one pass's picks on up to `workers` threads at once: the pass is planned as a whole (which picks
    run a full detection: `Steps.plan_detection`), split into groups of about equal work (`detection.split`), and
    each group detected by `Steps.detect` on its own thread, the caller's included; the faces come back in pick
    order. Each group reads and writes only its own streams' detection state, and the detector runs its cascade
    with per-call settings (`FaceDetector._cascade`), so the groups share nothing but the MTCNN sessions, which
    ONNX Runtime runs concurrently. A failing group fails the pass, after every group has ended."""

    def __init__(self, steps: Steps, workers: int) -> None:
        self.steps, self.workers = steps, max(1, workers)
        self._pool = (ThreadPoolExecutor(self.workers - 1, thread_name_prefix="scheduler-detect")
                      if self.workers > 1 else None)

    def detect(self, picks: Sequence[Any]) -> list[list[Any]]:
        plan = self.steps.plan_detection(picks)
        groups = split(plan, self.workers)
        if len(groups) == 1 or self._pool is None:
            return self.steps.detect(picks, plan)

        def group(g: list[int]) -> list[list[Any]]:
            return self.steps.detect([picks[i] for i in g], [plan[i] for i in g])

        futures = [self._pool.submit(group, g) for g in groups[1:]]
        try:
            found = [group(groups[0])] + [f.result() for f in futures]
        finally:
            wait(futures)  # no group still writes its streams' state when the pass is over, even a failed one
        out: list[list[Any]] = [[] for _ in picks]
        for g, faces in zip(groups, found):
            for i, f in zip(g, faces):
                out[i] = f
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class OverlappedPipeline:
    """Two stages: the worker thread picks due streams and detects their faces (`detect`) while the scheduler's
    thread tracks and scores the previous pass (`score`); one pass waits in between (a queue of one, so a slow
    scorer holds the detector back instead of letting frames age in a backlog).

    The worker only runs `due` and `detect` (MTCNN and re-location), which read each stream's last boxes. Those are
    written by `track` on the scheduler's thread, so a stream picked for a pass is not picked again until that pass
    is tracked (`InFlight`): each detection sees the boxes of the stream's previous pass, as in the serial
    pipeline, and every track record, ring and verdict stays on the scheduler's thread. The load is the busier
    stage's, the detector's including the time the scorer holds it back (see `_detect_stage`). With several
    detection workers the stage is still one: busy from the pass's start to its last group's end, so more workers
    shorten its busy time and never count a second of wall time twice (the `cores` measure caps it by the CPU the
    machine really used)."""

    name = "overlapped"

    def __init__(self, steps: Steps, threads: str = "shared", detect_workers: int | None = None) -> None:
        self.steps = steps
        self.threads = threads
        self.detect_workers = detect_workers
        self.clock = BusyClock()
        self.in_flight = InFlight()
        self._handoff: queue.Queue[tuple[list[Any], list[list[Any]]]] = queue.Queue(maxsize=1)
        self._torch_threads: int | None = None
        self._workers = DetectWorkers(steps, 1)

    def open(self) -> None:
        """The stages run at once: size their thread pools by the plan (`threads.py`)."""
        import torch

        self._torch_threads = torch.get_num_threads()
        plan = plan_threads("overlapped", share=self.threads)
        apply_threads(plan, self.steps.engines)
        if hasattr(self.steps.detector, "set_threads"):
            self.steps.detector.set_threads(plan.detector)
        self._workers = DetectWorkers(self.steps, self.detect_workers or plan.detect_workers)

    def close(self) -> None:
        """End the detection workers; give the process its torch pool back."""
        self._workers.close()
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads)
            self._torch_threads = None

    def run(self, stop: threading.Event) -> None:
        worker = threading.Thread(target=self._detect_stage, args=(stop,), name="scheduler-detect", daemon=True)
        worker.start()
        while not stop.is_set():
            try:
                picks, detections = self._handoff.get(timeout=IDLE_WAIT_S)
            except queue.Empty:
                self.steps.tick(self.clock)
                continue
            began = time.monotonic()
            try:
                try:
                    tracked = self.steps.track(picks, detections)
                finally:
                    self.in_flight.discard(st.name for st, _ in picks)
                self.steps.score(picks, tracked)
            except Exception:  # one bad frame or engine error must not kill the live loop
                log.exception("inference pass failed")
            self.clock.add("score", began, time.monotonic())
            self.steps.tick(self.clock)
        worker.join(WORKER_JOIN_S)

    def _detect_stage(self, stop: threading.Event) -> None:
        """The worker: due streams not in flight -> detections -> the hand-off queue.

        Its busy time is the time it detects, plus the time it has due work it may not start because the scorer
        has not taken the last pass (the queue is full, or a due stream's last pass is not tracked yet): then the
        pipeline is full even though the detector idles, and counting that as idle would hide the overload."""
        clock = self.clock
        while not stop.is_set():
            skip = self.in_flight.snapshot()
            began = time.monotonic()
            clock.begin("detect", began)
            picks = self.steps.due(began, skip)
            if not picks:
                held = bool(skip) and any(began >= st.next_due for st in self.steps.streams()
                                          if st.name in skip and not st.shed)
                if not held:
                    clock.end("detect", began)  # nothing to do: idle
                stop.wait(IDLE_WAIT_S)
                if held:
                    clock.end("detect", time.monotonic())
                continue
            try:
                found = self._workers.detect(picks)
            except Exception:
                log.exception("detection failed")
                clock.end("detect", time.monotonic())
                continue
            self.in_flight.add(st.name for st, _ in picks)
            while not stop.is_set():
                try:
                    self._handoff.put((picks, found), timeout=HANDOFF_WAIT_S)
                    break
                except queue.Full:
                    continue
            clock.end("detect", time.monotonic())
