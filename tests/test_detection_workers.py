"""The detection stage on several threads (`scheduler.detect_workers`) and staggered full detections
(`scheduler.detection.stagger`): the same faces per frame as one batch, full detections spread over the passes
without ever coming later than `detect_every`, and a stage load that stays honest with more workers."""

from __future__ import annotations

import threading
import time

import av
import numpy as np
import pytest

from stream.config.faces import DetectorConfig
from stream.config.scheduler import DetectionPolicy, SchedulerConfig
from stream.live.scheduler.detection import Planned, split, stagger
from stream.live.scheduler.loop import Scheduler
from stream.live.scheduler.pipelines import DetectWorkers
from stream.live.sources import Frame
from stream.live.sources.buffer import LatestFrameBuffer
from stream.live.sources.live import StreamSource
from stream.live.sources.picture import Picture

from support.serve_fakes import AlwaysFake, OneFace, Ticker
from support.shared import FFPP_VIDEOS

STREAMS = 8
EVERY = 3
PASSES = 7  # one full pass, two of re-location, then the stagger's phases: full and re-located picks in each


# --- the policies, pure --------------------------------------------------------------------------------------
def _simulate(streams: int, every: int, passes: int, staggered: bool) -> tuple[list[int], list[list[int]]]:
    """Streams picked together every pass, as the scheduler counts: full detections per pass, and per stream the
    passes at which it ran one."""
    since = [None] * streams  # None: no track yet
    per_pass, at = [], [[] for _ in range(streams)]
    for k in range(passes):
        waits = [0 if s is None else max(0, every - 1 - s) for s in since]
        full = stagger(waits, [every] * streams) if staggered else [w == 0 for w in waits]
        for i, f in enumerate(full):
            since[i] = 0 if f else since[i] + 1
            if f:
                at[i].append(k)
        per_pass.append(sum(full))
    return per_pass, at


def test_stagger_spreads_streams_started_together_over_the_passes():
    flat, _ = _simulate(STREAMS, EVERY, 30, staggered=False)
    assert flat[:6] == [8, 0, 0, 8, 0, 0]  # in phase: one pass in three carries every pyramid
    per_pass, at = _simulate(STREAMS, EVERY, 30, staggered=True)
    share = -(-STREAMS // EVERY)
    assert max(per_pass[EVERY:]) <= share and min(per_pass[EVERY:]) >= STREAMS // EVERY, per_pass
    for runs in at:  # never later than the interval; after the moves, exactly the interval
        gaps = np.diff(runs)
        assert gaps.max() <= EVERY and (gaps[-5:] == EVERY).all(), runs
    assert sum(per_pass) - sum(flat) <= STREAMS  # each stream moved at most once


def test_stagger_never_puts_off_a_due_detection_nor_moves_a_lone_stream():
    assert stagger([0, 0, 0, 0], [3, 3, 3, 3]) == [True] * 4  # a crowded pass still runs every due one
    assert stagger([2], [3]) == [False]  # one stream alone: nothing to spread
    assert stagger([1, 2], [3, 3]) == [False, False]  # already spread out
    assert stagger([1, 1, 1], [3, 3, 3]) == [True, False, False]  # the first of the crowded pass moves
    assert stagger([2, 2, 1, 1, 1], [3] * 5) == [False, False, True, False, False]  # the most crowded pass first
    assert stagger([2, 2, 2, 2], [12, 3, 12, 3]) == [False, True, False, False]  # a camera moves before a screen


def test_split_shares_the_pass_by_work_and_loses_no_pick():
    plan = [Planned(True, 1), Planned(False, 1), Planned(False, 2), Planned(True, 1), Planned(False, 1)]
    groups = split(plan, 2)
    assert sorted(i for g in groups for i in g) == list(range(len(plan)))
    assert all(g == sorted(g) for g in groups)
    costs = [sum(plan[i].cost for i in g) for g in groups]
    assert max(costs) - min(costs) <= 1.0, groups
    assert all(sum(plan[i].full for i in g) == 1 for g in groups)  # one pyramid each
    assert split(plan, 1) == [list(range(len(plan)))]
    assert split(plan[:1], 4) == [[0]]  # no empty group


# --- the real detector on real frames ---------------------------------------------------------------------------
class _Feed(StreamSource):
    """A stream fed by the test, pass by pass."""

    def __init__(self, name: str) -> None:
        super().__init__(name, name, LatestFrameBuffer(), 5.0)

    def start(self):
        pass

    def stop(self):
        pass


@pytest.fixture(scope="module")
def clips(ffpp) -> list[list[av.VideoFrame]]:
    """PASSES frames (every third) of each of STREAMS streams, cut from the shared clips, as 720p decoded pictures."""
    out = []
    for k in range(STREAMS):
        with av.open(str(FFPP_VIDEOS[k % len(FFPP_VIDEOS)])) as container:
            frames = [f.reformat(width=1280, height=720, format="yuv420p")
                      for i, f in zip(range(3 * PASSES + k), container.decode(video=0)) if i >= k and i % 3 == k % 3]
        out.append(frames[:PASSES])
    assert all(len(c) == PASSES for c in out)
    return out


def _passes(clips, detector, workers: int) -> tuple[list[list[list]], list[list[bool]]]:
    """Every pass's detections per stream, and which picks ran a full detection, through `DetectWorkers`."""
    sched = Scheduler(detector, [], lambda record: None, SchedulerConfig())
    streams = [sched.add(_Feed(f"cam{k}")) for k in range(STREAMS)]
    pool = DetectWorkers(sched, workers)
    got, fulls = [], []
    try:
        for k in range(PASSES):
            picks = [(st, Frame(Picture(video=clips[j][k]), k, k / 5, k, 0.0)) for j, st in enumerate(streams)]
            fulls.append([p.full for p in sched.plan_detection(picks)])
            found = pool.detect(picks)
            sched.track(picks, found)
            got.append(found)
    finally:
        pool.close()
    return got, fulls


@pytest.mark.slow
def test_detection_workers_find_the_faces_one_batch_finds(clips):
    """Split between two threads, each frame gets the detections the whole pass in one batch gives it: the same
    boxes, probabilities and landmarks, on the same frames, with full detections and re-locations in every pass.
    Faces handed back to the wrong pick, or a group lost, change them."""
    from stream.live.faces import FaceDetector

    detector = FaceDetector(DetectorConfig(backend="onnx"))
    one, fulls = _passes(clips, detector, 1)
    two, fulls_two = _passes(clips, detector, 2)
    assert fulls == fulls_two
    assert any(0 < sum(f) < STREAMS for f in fulls[EVERY:])  # staggered: both kinds in one pass
    faces = 0
    for k, (a_pass, b_pass) in enumerate(zip(one, two)):
        for j, (a, b) in enumerate(zip(a_pass, b_pass)):
            assert len(a) == len(b), (k, j)
            for da, db in zip(a, b):
                np.testing.assert_allclose(da.box, db.box, atol=1e-3, err_msg=f"pass {k}, stream {j}")
                np.testing.assert_allclose(da.landmarks, db.landmarks, atol=1e-3)
                assert da.prob == pytest.approx(db.prob, abs=1e-5)
                faces += 1
    assert faces >= 0.8 * STREAMS * PASSES  # the clips show a face nearly always: not vacuous


def test_detection_workers_run_at_once_and_wait_for_each_other():
    """Two groups of a pass are detected on two threads at the same time, and the pass ends with its last group."""
    seen: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    class Slow(OneFace):
        def detect(self, images, profiles=None):
            began = time.monotonic()
            time.sleep(0.2)
            with lock:
                seen.append((threading.current_thread().name, began, time.monotonic()))
            return super().detect(images, profiles)

    sched = Scheduler(Slow(), [], lambda record: None, SchedulerConfig())
    picks = [(sched.add(_Feed(f"cam{k}")), Frame.of(image=np.zeros((96, 128, 3), np.uint8), pts=0, time=0.0,
                                                     index=0, received=0.0)) for k in range(4)]
    pool = DetectWorkers(sched, 2)
    try:
        began = time.monotonic()
        found = pool.detect(picks)
        took = time.monotonic() - began
    finally:
        pool.close()
    assert all(len(f) == 1 for f in found)
    assert len(seen) == 2 and len({name for name, _, _ in seen}) == 2
    (_, a0, a1), (_, b0, b1) = seen
    assert max(a0, b0) < min(a1, b1)  # they overlapped
    assert took >= 0.2 and took < 0.35  # one detection's time, not two


# --- load accounting -------------------------------------------------------------------------------------------
DETECT_S = 0.03  # per frame


class _SlowPerFrame(OneFace):
    def detect(self, images, profiles=None):
        time.sleep(DETECT_S * len(images))
        return super().detect(images, profiles)


def _detect_load(workers: int, seconds: float = 3.0) -> float:
    """The busiest stage's busy share of the real overlapped loop, 4 streams at 5 fps (20 frames of 30 ms a
    second: 60 % of one detection thread), the governor held still."""
    config = SchedulerConfig(pipeline="overlapped", detect_workers=workers, load="stage", high_load=1.0,
                             detection=DetectionPolicy(detect_every=1))
    sched = Scheduler(_SlowPerFrame(), [AlwaysFake()], lambda record: None, config)
    sources = [Ticker(f"cam{k}", fps=30.0, analysed_fps=5.0) for k in range(4)]
    for s in sources:
        sched.add(s)
        s.start()
    sched.start()
    loads = []
    try:
        time.sleep(1.0)  # the first period
        for _ in range(int(seconds)):
            time.sleep(1.0)
            loads.append(sched.stage_load)
    finally:
        sched.stop()
        for s in sources:
            s.stop()
    return float(np.mean(loads))


@pytest.mark.slow  # over 6 s in the fast tier (pytest --fast --durations=30, 2026-12-08)
def test_more_detection_workers_lower_the_stage_load_and_never_count_time_twice():
    one, two = _detect_load(1), _detect_load(2)
    assert 0.35 < one <= 1.0, one  # ~0.6: the stage's wall time, once
    assert two <= 0.75 * one, (one, two)  # two threads share each pass: the stage is busy about half as long
