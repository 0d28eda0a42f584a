"""serve against a real RTSP camera on loopback: boxes arrive, and survive the camera being killed and restarted
while a second source keeps flowing."""

import contextlib
import os
import signal
import threading
import time

import pytest

from engines.registry import DEFAULT_MODEL, build_engine
from stream.config.serve import ServeConfig
from stream.live.sources.live import SourceConfig

from support.shared import FFPP, MESONET_WEIGHTS
from support.live_server import LiveServer
from support.rtsp_server import RtspServer, unavailable_reason
from support.parts import needs
from support.serve_fakes import NoFaces
from support.ws_recorder import WsRecorder

pytestmark = [pytest.mark.slow, needs("GStreamer's RTSP server", unavailable_reason())]
# Boxes must flow again this soon after the camera returns: one capped back-off (Backoff().max_s plus jitter)
# and then however long the camera's first boxes took at startup (connect, first keyframe, detect, score: the
# machine's own measure of that work under its current load), twice over, and never under RETURN_FLOOR_S.
RETURN_FLOOR_S = 5.0
OUTAGE_S = 3.0
# The silent camera: its socket stays open and nothing arrives (the server is SIGSTOPped, not killed).
WATCHDOG_S = 4.0
# The source must leave "streaming" this long after the camera fell silent: the watchdog plus slack for a loaded
# machine. Kept under 2 * WATCHDOG_S on purpose: before the fix in live.py, FFmpeg's first timed-out read handed
# back the frame its parser held and only the next read failed, so a silent camera took two watchdog periods.
SILENT_DEADLINE_S = WATCHDOG_S + 3.0
STALL_S = 2 * WATCHDOG_S  # how long the camera stays silent (the source is reconnecting for the rest of it)
COMEBACK_S = 60.0  # after SIGCONT the camera streams again within this (back-off, open, first keyframe)



def recorder(server: LiveServer) -> WsRecorder:
    """Every websocket message with its arrival time on the monotonic clock the tests time the camera with."""
    return WsRecorder(server.base.replace("http", "ws") + "/ws", clock=time.monotonic)


def has_faces(message: dict) -> bool:
    return bool(message["faces"])


def test_rtsp_boxes_and_reconnect_while_file_keeps_flowing():
    engine = build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)
    with RtspServer(FFPP / "real" / "004.mp4") as camera:
        config = ServeConfig(sources=[
            SourceConfig(name="cam", url=camera.url, watchdog_s=3.0),
            SourceConfig(name="file", url=str(FFPP / "real" / "634.mp4"), loop=True),
        ])
        started = time.monotonic()  # the sources start with the server
        with LiveServer(config, [engine]) as server, recorder(server) as rec:
            first_boxes = rec.first("overlay", "cam", 0.0, 60, where=has_faces)
            assert first_boxes is not None, "no boxes from the RTSP camera"
            assert rec.first("overlay", "file", 0.0, 30, where=has_faces) is not None
            backoff = config.sources[0].backoff
            return_deadline = (backoff.max_s * (1 + backoff.jitter)
                               + max(RETURN_FLOOR_S, 2 * (first_boxes - started)))
            camera.stop()
            killed = time.monotonic()
            time.sleep(OUTAGE_S)
            states = {m["state"] for t, m in rec.records if t > killed and m["type"] == "status"
                      and m["stream"] == "cam"}
            assert states & {"reconnecting", "connecting"}, states
            camera.restart()
            back = time.monotonic()
            first = rec.first("overlay", "cam", back, return_deadline + 10, where=has_faces)
            assert first is not None and first - back <= return_deadline, (
                f"boxes returned {None if first is None else round(first - back, 2)} s after the camera "
                f"(deadline {return_deadline:.1f} s; its first boxes took {first_boxes - started:.1f} s)")
            # the file source never stopped: boxes in every second of the outage
            outage = rec.times("overlay", "file", killed, where=has_faces)
            outage = [t for t in outage if t <= back]
            assert len(outage) >= OUTAGE_S, len(outage)
            status = next(m for _, m in reversed(rec.records) if m["type"] == "status" and m["stream"] == "cam")
            assert status["reconnects"] >= 1


def wait_until(predicate, timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def test_silent_camera_is_restarted_by_the_watchdog_while_file_keeps_flowing():
    """A camera that keeps its socket open and sends nothing (SIGSTOP: the kernel still holds the connection)
    is noticed by the watchdog: the source leaves streaming within about watchdog_s, with the reason in words,
    while a file beside it is analysed throughout; once the camera resumes, the source streams again."""
    with RtspServer(FFPP / "real" / "004.mp4") as camera:
        config = ServeConfig(sources=[
            SourceConfig(name="cam", url=camera.url, watchdog_s=WATCHDOG_S),
            SourceConfig(name="file", url=str(FFPP / "real" / "634.mp4"), loop=True),
        ])
        with LiveServer(config, [], detector=NoFaces()) as server, \
                recorder(server) as rec:
            cam = server.service.scheduler.stream("cam").source
            changes: list[tuple[float, str, str | None]] = []
            left = threading.Event()

            def on_state(src, old, new):
                changes.append((time.monotonic(), new.value, src.error))
                if old.value == "streaming" and new.value != "streaming":
                    left.set()

            cam.on_state(on_state)
            assert wait_until(lambda: cam.state.value == "streaming" and len(rec.times("overlay", "cam")) >= 5, 60), (
                f"the RTSP camera never streamed: {cam.state.value}, {cam.error}")
            assert wait_until(lambda: len(rec.times("overlay", "file")) >= 5, 30), "the file never streamed"
            pid = camera.pid  # the GStreamer server's own process (RtspServer runs it as a child)
            os.kill(pid, signal.SIGSTOP)
            silent = time.monotonic()
            try:
                assert left.wait(SILENT_DEADLINE_S + 10), f"still {cam.state.value} long after the silence"
                noticed = next(t for t, state, _ in changes if t >= silent and state != "streaming")
                assert noticed - silent <= SILENT_DEADLINE_S, (
                    f"the watchdog ({WATCHDOG_S} s) took {noticed - silent:.2f} s to notice the silent camera")
                assert wait_until(lambda: time.monotonic() - silent >= STALL_S, STALL_S + 1)
                assert cam.state.value in ("reconnecting", "connecting"), cam.state.value
                # the reason in words: the first error after the silence names it
                assert "no frame for" in next(e for t, _, e in changes if t >= noticed and e), changes
                # the file was analysed all along: overlays throughout, never a gap as long as the watchdog
                during = rec.times("overlay", "file", silent, time.monotonic())
                assert len(during) >= STALL_S, f"{len(during)} file overlays in {STALL_S} s of camera silence"
                gaps = [b - a for a, b in zip([silent, *during], [*during, time.monotonic()])]
                assert max(gaps) < WATCHDOG_S, f"the file stalled {max(gaps):.2f} s beside the silent camera"
                statuses = [m for t, m in list(rec.records) if t >= silent and m["type"] == "status"
                            and m["stream"] == "cam"]
                assert any(m["state"] == "reconnecting" and "no frame for" in (m.get("error") or "")
                           for m in statuses), statuses[-3:]
            finally:
                with contextlib.suppress(ProcessLookupError):  # by PID: only the server this test stopped
                    os.kill(pid, signal.SIGCONT)
            resumed = time.monotonic()
            assert wait_until(lambda: cam.state.value == "streaming", COMEBACK_S), (
                f"the camera resumed but the source is still {cam.state.value}: {cam.error}")
            assert wait_until(lambda: rec.times("overlay", "cam", resumed), 30), "no overlay from the camera after it resumed"
            assert cam.reconnects >= 1 and cam.error is None
