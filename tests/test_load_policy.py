"""Who waits under load (issue 25): watched streams and higher priorities keep their rate longest, the status says
why a stream is slowed or paused, and the load is the process's CPU time, not a stage's wall time."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, replace

import pytest

from stream.config.scheduler import DetectionPolicy, SchedulerConfig
from stream.config.serve import ServeConfig
from stream.config.sources import SourceConfig
from stream.live.scheduler.governor import CpuClock, LoadGovernor, load_of, rank
from stream.live.scheduler.loop import Scheduler
from stream.live.sources.buffer import LatestFrameBuffer
from stream.live.sources.live import Attention, AVLiveSource, StreamSource

from support.live_server import LiveServer
from support.serve_fakes import Idle, NoFaces, Ticker, add_source

MIN_FPS = 1.0


@dataclass(frozen=True)
class _Stream:
    name: str
    order: int
    analysed_fps: float = 5.0
    shed: bool = False
    priority: int = 0
    attention: int = 0


DECIDED: list = []  # every decision of the current test (the governor keeps only its last few in words)


@pytest.fixture(autouse=True)
def _fresh_log():
    DECIDED.clear()


def _loaded(governor: LoadGovernor, streams: list[_Stream], periods: int, load: float = 0.99) -> list[_Stream]:
    """`periods` of `load`, applying sheds and resumes as the scheduler does."""
    for _ in range(periods):
        d = governor.observe(load, streams)
        DECIDED.append(d)
        if d is not None and d.stream is not None:
            streams = [replace(s, shed=d.action == "shed") if s.name == d.stream else s for s in streams]
    return streams


def _paused(governor: LoadGovernor) -> list[str]:
    """The streams paused so far in this test, in order."""
    return [d.stream for d in DECIDED if d is not None and d.action == "shed"]


def test_a_watched_webcam_keeps_its_rate_while_the_files_slow_down_and_pause_first():
    governor = LoadGovernor(SchedulerConfig(min_fps=MIN_FPS, load_smoothing=1.0))
    # the webcam was connected last: before issue 25 it was the first one paused
    streams = [_Stream("file1", 1), _Stream("file2", 2), _Stream("webcam", 3, attention=Attention.SENDER)]
    streams = _loaded(governor, streams, 8)  # 5 fps * 0.8 ** 8 < 1 fps: the files reach the floor
    assert governor.scale_of("webcam") == 1.0
    assert governor.target_fps(5.0, "file1") == governor.target_fps(5.0, "file2") == MIN_FPS
    assert "not watched, priority 0" in governor.reasons["file1"] and "1 more important" in governor.reasons["file1"]
    assert "webcam" not in governor.reasons
    assert "webcam" not in str(governor.events)
    streams = _loaded(governor, streams, 2)  # then the files are paused, the newer first...
    assert _paused(governor) == ["file2", "file1"] and governor.scale_of("webcam") == 1.0
    assert "paused" in governor.reasons["file2"] and "least important" in governor.reasons["file2"]
    streams = _loaded(governor, streams, 1)  # ...and only now is the webcam slowed
    assert governor.scale_of("webcam") == pytest.approx(0.8)
    streams = _loaded(governor, streams, 30)
    assert not next(s for s in streams if s.name == "webcam").shed  # the last stream is never paused
    assert governor.target_fps(5.0, "webcam") == MIN_FPS
    # recovery runs the other way: the webcam's rate first, then the files, the oldest first
    for _ in range(60):
        streams = _loaded(governor, streams, 1, load=0.1)
        if governor.scale_of("webcam") < 1.0:
            assert all(s.shed or governor.scale_of(s.name) < 1.0 for s in streams if s.name != "webcam")
    assert not any(s.shed for s in streams) and governor.scale == 1.0 and not governor.reasons


def test_a_webcam_outranks_relayed_cameras_and_they_outrank_priority():
    relayed = _Stream("cam", 1, attention=Attention.VIEWERS, priority=-50)
    assert rank(_Stream("webcam", 2, attention=Attention.SENDER, priority=-100)) > rank(relayed)
    assert rank(relayed) > rank(_Stream("vip", 3, priority=100))


def test_priority_orders_the_unwatched_streams_and_the_newest_goes_first_among_equals():
    governor = LoadGovernor(SchedulerConfig(min_fps=MIN_FPS, load_smoothing=1.0))
    streams = [_Stream("lobby", 1, priority=-5), _Stream("vault", 2, priority=10), _Stream("door", 3),
               _Stream("hall", 4)]
    assert sorted(streams, key=rank)[0].name == "lobby" and max(streams, key=rank).name == "vault"
    first = governor.observe(0.99, streams)
    assert first.action == "lower" and first.streams == ("lobby",)
    streams = _loaded(governor, streams, 9)  # lobby at the floor after 8 steps and paused, then door and hall
    assert _paused(governor) == ["lobby"]
    assert governor.scale_of("door") == governor.scale_of("hall") < 1.0 == governor.scale_of("vault")
    streams = _loaded(governor, streams, 60)
    assert _paused(governor) == ["lobby", "hall", "door"]  # the lowest, then the newer of door/hall; vault stays
    assert governor.target_fps(5.0, "vault") == MIN_FPS
    assert not next(s for s in streams if s.name == "vault").shed


def test_the_cpu_clock_is_cpu_seconds_per_core_over_the_period():
    clock = CpuClock(cores=2)
    assert clock.take(10.0, 3.0) == 0.0  # the first take only starts a period
    assert clock.take(11.0, 4.5) == pytest.approx(0.75)  # 1.5 CPU seconds in 1 s on 2 cores
    assert clock.take(12.0, 4.5) == 0.0
    real = CpuClock(cores=1)
    real.take(time.monotonic(), time.process_time())
    time.sleep(0.3)
    asleep = real.take(time.monotonic(), time.process_time())
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        hashlib.sha256(b"x" * 4096).digest()  # this thread busy the whole period (as much as a shared machine lets)
    busy = real.take(time.monotonic(), time.process_time())
    assert asleep < 0.05 and asleep + 0.1 < busy <= 1.05, (asleep, busy)


class _SleepyDetector(NoFaces):
    """A detector that takes 80 ms a frame without using a core (a stage that waits, not works)."""

    def detect(self, images, profiles=None):
        time.sleep(0.08)
        return super().detect(images, profiles)


def _run(load: str, seconds: float = 3.0) -> Scheduler:
    config = SchedulerConfig(load=load, load_smoothing=1.0, adapt_period_s=0.5,
                             detection=DetectionPolicy(detect_every=1))
    statuses = []
    sched = Scheduler(_SleepyDetector(), [], statuses.append, config)
    source = Ticker("cam", fps=60.0, analysed_fps=20.0)  # 20 detections of 80 ms a second do not fit
    sched.add(source)
    source.start()
    sched.start()
    try:
        time.sleep(seconds)
    finally:
        sched.stop()
        source.stop()
    return sched


def test_the_default_load_is_a_full_pipeline_on_full_cores():
    # the stage full, a third of a core idle (the case of issue 25): not full
    assert load_of("cores", stage=1.0, process=0.83, machine=0.83) == pytest.approx(0.83)
    # cores full with another process's work too, the pipeline full: full, so who waits is decided
    assert load_of("cores", stage=0.98, process=0.4, machine=1.0) == pytest.approx(0.98)
    # cores full but the pipeline keeps up: not full
    assert load_of("cores", stage=0.5, process=0.9, machine=1.0) == pytest.approx(0.5)
    assert load_of("process", 1.0, 0.3, 1.0) == 0.3 and load_of("stage", 1.0, 0.3, 0.3) == 1.0
    with pytest.raises(ValueError, match="unknown load measure"):
        load_of("wall", 1.0, 1.0, 1.0)  # type: ignore[arg-type]
    assert SchedulerConfig().load == "cores"


@pytest.mark.slow  # over 6 s in the fast tier (pytest --fast --durations=30, 2026-12-08)
def test_a_full_stage_on_idle_cores_is_not_process_load_but_the_old_measure_still_is():
    cpu = _run("process")
    assert cpu.stage_load > 0.9  # the detector stage is full...
    assert cpu.cpu_load < 0.5 and cpu.governor.scale == 1.0, cpu.governor.events  # ...but the cores are idle
    stage = _run("stage")
    assert stage.governor.scale < 1.0  # the measure before issue 25, still selectable


def test_the_status_says_why_a_stream_is_slowed_or_paused():
    statuses = []
    sched = Scheduler(NoFaces(), [], statuses.append, SchedulerConfig(min_fps=MIN_FPS, load_smoothing=1.0))
    cam = sched.add(_Quiet("cam"))
    cam.source.priority = 3
    sched.add(_Quiet("webcam", watched=True))
    sched.publish_status()
    at_rest = {s.stream: s.scheduler for s in statuses}
    assert at_rest["cam"].reason is None and at_rest["cam"].priority == 3 and not at_rest["cam"].watched
    assert at_rest["webcam"].watched
    sched.govern(0.99)
    statuses.clear()
    sched.publish_status()
    got = {s.stream: s.scheduler.to_message() for s in statuses}
    assert got["cam"]["reason"].startswith("slowed to 80% of its target at load 99%")
    assert got["cam"]["scheduler"]["scale"] == 0.8 and got["cam"]["scheduler"]["measure"] == "cores"
    assert got["webcam"]["reason"] is None and got["webcam"]["scheduler"]["scale"] == 1.0
    for _ in range(40):
        sched.govern(0.99)
    statuses.clear()
    sched.publish_status()
    got = {s.stream: s.scheduler for s in statuses}
    assert got["cam"].shed and got["cam"].reason.startswith("paused at load 99%")
    assert not got["webcam"].shed


class _Quiet(StreamSource):
    """A stream at 5 analysed fps that sends nothing; `watched` like a browser's webcam."""

    def __init__(self, name: str, watched: bool = False) -> None:
        super().__init__(name, "test:", LatestFrameBuffer(), 5.0)
        self._sender = watched

    @property
    def attention(self) -> int:
        return Attention.SENDER if self._sender else super().attention

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def test_relay_viewers_make_a_stream_watched_while_they_last():
    from stream.live.server.relay_media import StreamRelay

    source = Idle("cam")
    loop = asyncio.new_event_loop()
    try:
        relay = StreamRelay(source, loop)
        assert source.watched and source.attention == Attention.VIEWERS
        second = source.watch()
        relay.close()
        assert source.watched  # someone else still watches
        second()
        second()  # twice is harmless
        assert not source.watched and source.attention == Attention.NONE
    finally:
        loop.close()


def test_a_configured_priority_reaches_the_source():
    assert AVLiveSource(SourceConfig(name="cam", url="/dev/null", priority=7)).priority == 7
    with pytest.raises(ValueError, match="less than or equal to 100"):
        SourceConfig(name="cam", url="/dev/null", priority=101)


def test_the_api_sets_a_priority_and_refuses_bad_ones_changing_nothing(tmp_path):
    with LiveServer(ServeConfig(port=0, data_dir=tmp_path), [], detector=NoFaces()) as server:
        add_source(server, Idle("cam"))
        source = server.service.scheduler.sources()[0]
        status, body = server.api("POST", "/api/streams/cam/priority", {"priority": 5})
        assert status == 200 and json.loads(body) == {"name": "cam", "priority": 5} and source.priority == 5
        for bad, words in (({"priority": "high"}, "integer"), ({"priority": True}, "integer"),
                           ({"priority": 2.0}, "integer"), ({"priority": 101}, "between -100 and 100"),
                           ({}, '{"priority": N}')):
            status, body = server.api("POST", "/api/streams/cam/priority", bad)
            assert status == 400 and words in body, (bad, body)
            assert source.priority == 5  # nothing changed
        status, _ = server.api("POST", "/api/streams/nope/priority", {"priority": 1})
        assert status == 404 and source.priority == 5
        names = server.service.names()
        status, body = server.api("POST", "/api/streams", {"url": str(tmp_path / "x.mp4"), "priority": -101})
        assert status == 400 and "between -100 and 100" in body and server.service.names() == names


def test_a_stream_riding_along_with_others_passes_keeps_its_own_rate():
    """Coalescing lets a stream join a pass up to half a period early; it must stay on its own grid, or a slowed
    camera would ride every pass of a webcam at up to twice its target and take those passes' time."""
    import numpy as np

    from stream.live.sources import Frame

    sched = Scheduler(NoFaces(), [], lambda m: None, SchedulerConfig())
    fast, slow = sched.add(_Quiet("webcam", watched=True)), sched.add(_Quiet("cam"))
    slow.source.analysed_fps = 1.4  # due every 0.71 s: within half a period of every 2nd or 3rd webcam pass
    picks = {"webcam": 0, "cam": 0}
    image = np.zeros((4, 4, 3), np.uint8)
    for k in range(500):  # 100 s of passes at the webcam's 5 a second
        now = k / 5.0 + 1e-6  # a pass starts a hair after its due time, as on a real clock
        for st in (fast, slow):
            st.source.buffer.put(Frame(image, k, now, k, now))
        for st, _ in sched.due(now):
            picks[st.name] += 1
    assert picks["webcam"] == pytest.approx(500, abs=2)
    assert picks["cam"] == pytest.approx(140, abs=3), picks  # its 1.4 a second, not every pass it could join


@dataclass(frozen=True)
class _Measured(_Stream):
    achieved_fps: float = 5.0


def test_a_watched_stream_short_of_its_rate_makes_the_others_slow_down_below_full_load():
    governor = LoadGovernor(SchedulerConfig(min_fps=MIN_FPS, load_smoothing=1.0))
    webcam = _Measured("webcam", 3, attention=Attention.SENDER, achieved_fps=3.5)  # 70 % of its 5 fps
    files = [_Measured("file1", 1, achieved_fps=2.0), _Measured("file2", 2, achieved_fps=2.0)]
    first = governor.observe(0.7, [webcam, *files])  # the machine is not "full"...
    assert first.action == "lower" and first.streams == ("file1", "file2")  # ...but the webcam is short
    assert governor.scale_of("webcam") == 1.0
    for _ in range(20):
        governor.observe(0.1, [webcam, *files])  # while it stays short, the files get nothing back
    assert governor.target_fps(5.0, "file1") == MIN_FPS and not governor.observe(0.1, [webcam, *files])
    met = replace(webcam, achieved_fps=4.9)
    assert governor.observe(0.1, [met, *files]).action == "raise"  # once it has its rate, they recover
    # a stream still connecting (no rate yet) is not short; nor is one ranked alike
    fresh = LoadGovernor(SchedulerConfig(load_smoothing=1.0))
    assert fresh.observe(0.5, [replace(webcam, achieved_fps=0.0), *files]) is None
    assert fresh.observe(0.5, [replace(files[0], achieved_fps=0.5), files[1]]) is None
