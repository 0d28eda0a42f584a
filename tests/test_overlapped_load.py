"""The scheduler's load accounting with overlapped stages (`pipeline: overlapped`): it sheds under a real overload
and not while there is spare capacity. First pure, on synthetic stage timings fed to `BusyClock` and the
`LoadGovernor`; then the real scheduler loop with a detector and an engine that take known times."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest

from stream.config.scheduler import DetectionPolicy, SchedulerConfig
from stream.live.scheduler.governor import BusyClock, LoadGovernor
from stream.live.scheduler.loop import Scheduler
from stream.live.scheduler.threads import ThreadPlan, apply_threads, plan_threads

from support.serve_fakes import AlwaysFake, OneFace, Ticker

DETECT_S = SCORE_S = 0.04  # one pass: 40 ms of detection, then 40 ms of scoring
PERIODS = 6


@dataclass
class _Stream:
    name: str = "cam"
    order: int = 1
    shed: bool = False
    priority: int = 0
    attention: int = 0
    analysed_fps: float = 5.0


def _spans(pipeline: str, rate: float, seconds: float) -> list[tuple[str, float, float]]:
    """Stage intervals of passes falling due `rate` times a second. Serial: detect then score, one pass at a time.
    Overlapped: pass k+1's detection starts once it is due, the detector is free and pass k's scoring has begun
    (its boxes are tracked); its scoring waits for its detection and for the scorer."""
    out, k = [], 0
    detect_free = score_start = score_free = 0.0
    while k / rate < seconds:
        due = k / rate
        if pipeline == "serial":
            start = max(due, score_free)
            score_free = start + DETECT_S + SCORE_S
            out.append(("pass", start, score_free))
        else:
            d0 = max(due, detect_free, score_start)
            detect_free = d0 + DETECT_S
            score_start = max(detect_free, score_free)
            score_free = score_start + SCORE_S
            out += [("detect", d0, detect_free), ("score", score_start, score_free)]
        k += 1
    return out


def _govern(pipeline: str, rate: float) -> tuple[LoadGovernor, list[float]]:
    config = SchedulerConfig(load_smoothing=1.0)
    governor, clock, stream = LoadGovernor(config), BusyClock(), _Stream()
    spans = _spans(pipeline, rate, PERIODS + 1)
    loads = []
    for period in range(PERIODS):
        for stage, a, b in spans:
            if period <= a < period + 1:
                clock.add(stage, a, b)
        loads.append(clock.take(period, period + 1))
        governor.observe(loads[-1], [stream])
    return governor, loads


def test_overlapped_stages_with_spare_capacity_do_not_shed():
    # 15 passes a second of 40 + 40 ms: the stages' time adds up to 1.2 s a second, more than the wall time, yet
    # each stage is busy 60 % of it and the pipeline keeps up. A sum would shed here; the busiest stage does not.
    governor, loads = _govern("overlapped", 15)
    stage_sum = sum(b - a for _, a, b in _spans("overlapped", 15, 1.0))
    assert stage_sum > 1.0  # what summing stage times would call the load
    assert all(0.5 < u < 0.7 for u in loads[1:]), loads
    assert governor.scale == 1.0 and not governor.events


def test_overlapped_stages_shed_under_a_real_overload():
    # 30 passes a second: a pass needs its 40 ms detection, so at most 25 fit; the detector is busy all the time
    governor, loads = _govern("overlapped", 30)
    assert all(u > 0.95 for u in loads[1:]), loads
    assert governor.scale < 1.0 and "lowered" in governor.events[0]


def test_the_same_rate_overloads_a_serial_pipeline():
    governor, loads = _govern("serial", 15)  # 15 x 80 ms = 1.2 s of work a second
    assert all(u > 0.95 for u in loads[1:]), loads
    assert governor.scale < 1.0


def test_busy_clock_counts_a_stage_once_and_carries_spans_across_periods():
    clock = BusyClock()
    clock.add("detect", 0.0, 0.5)
    clock.add("detect", 0.25, 0.75)  # overlapping spans of one stage are counted once
    clock.add("score", 0.5, 1.5)  # runs past the period's end
    assert clock.take(0.0, 1.0) == pytest.approx(0.75)
    assert clock.fraction(1.0, 2.0) == pytest.approx(0.5)  # the rest of the score span is in the next period
    assert BusyClock().take(0.0, 1.0) == 0.0


# --- the real loop -------------------------------------------------------------------------------------------
class _SlowDetector(OneFace):
    def detect(self, images, profiles=None):
        time.sleep(DETECT_S)
        return super().detect(images, profiles)


class _SlowEngine(AlwaysFake):
    def predict(self, crops: np.ndarray) -> np.ndarray:
        time.sleep(SCORE_S)
        return super().predict(crops)


def _live(pipeline: str, analysed_fps: float, seconds: float = 3.0) -> tuple[Scheduler, float]:
    config = SchedulerConfig(pipeline=pipeline, load_smoothing=1.0, adapt_period_s=0.5, load="stage",
                             detection=DetectionPolicy(detect_every=1))
    sched = Scheduler(_SlowDetector(), [_SlowEngine()], lambda msg: None, config)
    source = Ticker("cam", fps=60.0, analysed_fps=analysed_fps)
    st = sched.add(source)
    source.start()
    sched.start()
    try:
        time.sleep(seconds)
        rate = st.analysed.rate()
    finally:
        sched.stop()
        source.stop()
    return sched, rate


@pytest.mark.slow  # over 6 s in the fast tier (pytest --fast --durations=30, 2026-12-08)
def test_real_overlapped_loop_keeps_up_where_the_serial_one_sheds():
    overlapped, rate = _live("overlapped", 15.0)
    assert overlapped.governor.scale == 1.0, overlapped.governor.events
    assert rate > 12.0  # 15 passes of 80 ms a second do fit when the stages overlap
    serial, serial_rate = _live("serial", 15.0)
    assert serial.governor.scale < 1.0 and serial_rate < 12.5  # 80 ms a pass: at most 12.5 a second


def test_real_overlapped_loop_sheds_when_the_detector_is_full():
    sched, rate = _live("overlapped", 40.0)  # at most 25 detections of 40 ms fit in a second
    assert sched.governor.scale < 1.0, (sched.governor.utilisation, rate)


# --- thread pools --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cores", [1, 2, 3, 16])
def test_thread_plan_fills_the_cores_without_oversubscription(cores):
    serial = plan_threads("serial", cores)
    assert serial == ThreadPlan(cores, cores, cores)  # stages take turns: each may use every core
    # shared (the default): each overlapped stage may use every core, so an idle stage's cores serve the other,
    # and one detection worker per core detects a share of each pass
    assert plan_threads("overlapped", cores) == ThreadPlan(cores, cores, cores, detect_workers=cores)
    plan = plan_threads("overlapped", cores, share="split")
    assert plan.detector >= 1 and plan.engines >= 1 and plan.detect_workers == 1 == serial.detect_workers
    if cores == 1:
        assert plan == ThreadPlan(1, 1, 1)  # nothing can overlap on one core
    else:
        assert plan.detector + plan.engines == cores and plan.torch == plan.detector


def test_engine_sessions_are_resized_by_the_plan(tmp_path):
    from engines.onnx_backend import onnx_engine_for
    from engines.registry import build_engine

    from support.shared import MESONET_WEIGHTS

    engine = onnx_engine_for(build_engine("meso4-df", weights_dir=MESONET_WEIGHTS, allow_download=False), tmp_path)
    crops = np.random.default_rng(0).integers(0, 255, (3, 256, 256, 3), dtype=np.uint8)
    before = engine.predict(crops)
    apply_threads(plan_threads("overlapped", 4, share="split"), [engine])
    assert engine.session.get_session_options().intra_op_num_threads == 2
    np.testing.assert_array_equal(engine.predict(crops), before)  # same model, fewer workers


def test_overlapped_scheduler_splits_the_pools_and_gives_torch_its_pool_back():
    import torch

    from stream.config.faces import DetectorConfig
    from stream.live.faces import FaceDetector

    detector = FaceDetector(DetectorConfig(backend="onnx"))
    before = torch.get_num_threads()
    sched = Scheduler(detector, [], lambda msg: None, SchedulerConfig(pipeline="overlapped"))
    plan = plan_threads("overlapped")
    sched.start()
    try:
        assert torch.get_num_threads() == plan.torch
        assert detector.nets["pnet"].session.get_session_options().intra_op_num_threads == plan.detector
    finally:
        sched.stop()
    assert torch.get_num_threads() == before


def test_a_stage_still_running_counts_in_every_period_it_spans():
    clock = BusyClock()
    clock.begin("detect", 0.5)  # a 2.5 s detection, reported only when it ends
    assert clock.take(0.0, 1.0) == pytest.approx(0.5)
    assert clock.take(1.0, 2.0) == pytest.approx(1.0)
    clock.end("detect", 3.0)
    assert clock.take(2.0, 3.0) == pytest.approx(1.0)
    assert clock.take(3.0, 4.0) == 0.0


@pytest.mark.slow  # 10 s (pytest --fast --durations=30, 2026-12-07)
def test_busy_clock_loses_no_span_while_two_stages_report_and_the_loop_takes_periods():
    """The overlapped pipeline's two stages report from their own threads while the scheduler's thread takes
    periods: every span reported must still be counted (the clock holds its own lock)."""
    import sys
    import threading

    spans = 3000
    clock, errors = BusyClock(), []

    def detect():  # stage spans [i, i + 0.5)
        for i in range(spans):
            clock.add("detect", float(i), i + 0.5)

    def score():  # begin/end spans [i, i + 0.25)
        for i in range(spans):
            clock.begin("score", float(i))
            clock.end("score", i + 0.25)

    def periods(stop):  # the scheduler's thread: periods that end before every span, so they forget none
        while not stop.is_set():
            try:
                clock.take(-2.0, -1.0)
            except Exception as exc:  # a dict changed size while being copied, and the like
                errors.append(exc)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so a race shows
    stop = threading.Event()
    taker = threading.Thread(target=periods, args=(stop,))
    try:
        taker.start()
        stages = [threading.Thread(target=detect), threading.Thread(target=score)]
        for t in stages:
            t.start()
        for t in stages:
            t.join()
    finally:
        stop.set()
        taker.join()
        sys.setswitchinterval(switch)
    assert not errors
    assert clock.fraction(0.0, spans, "detect") == pytest.approx(0.5)
    assert clock.fraction(0.0, spans, "score") == pytest.approx(0.25)
