"""Alert recordings across a source's clock breaks, from a real `serve`: a 10 s 1080p file looped under a 20 s
alert, and an RTSP camera (GStreamer's server) restarted mid-alert, each give ONE recording covering the alert and
its pre-roll at the source's resolution, on one rising clock, with the breaks noted in the manifest, which
`dfstream alerts verify` passes. The stand-in engine and detector make the alert (the recording is under test)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from engines.base import Engine, InputSpec
from stream.config.evidence import EvidencePolicy
from stream.config.serve import ServeConfig
from stream.config.verdicts import VerdictPolicy
from stream.live.sources.live import SourceConfig
from stream.messages import WIRE

from support.shared import FFPP
from support.live_server import LiveServer
from support.parts import require
from support.serve_fakes import AlwaysFake, OneFace
from test_evidence_recording import is_alert, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SIZE = (1920, 1080)
FPS = 25
CLIP_S = 10
REAL_FIRST_S = 7.0  # the engine calls the face real this long (a full pre-roll is in the ring by then)...
FAKE_FOR_S = 20.0  # ...then fake this long (the alert), then real again
PRE_S, POST_S = 5.0, 3.0
TWITCHY = VerdictPolicy(smoothing="ema", ema_alpha=1.0, t_high=0.7, t_low=0.3, k=1)


class FakeForAWhile(Engine):
    """Real, then fake for `FAKE_FOR_S` (wall clock, from its first call), then real: one alert of that length."""

    def __init__(self) -> None:
        self.name, self.spec = "fake-for-a-while", InputSpec(size=32)
        self.t0: float | None = None

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.t0 = self.t0 or time.monotonic()
        fake = REAL_FIRST_S <= time.monotonic() - self.t0 < REAL_FIRST_S + FAKE_FOR_S
        return np.full(len(crops), 0.99 if fake else 0.01, dtype=np.float32)


def make_1080p_clip(path: Path) -> None:
    """10 s of a shared FF++ clip scaled up to 1080p, H.264 with B-frames and a 1 s GOP."""
    with av.open(str(FFPP / "fake" / "Deepfakes_519_515.mp4")) as src, av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = *SIZE, "yuv420p"
        s.options = {"preset": "ultrafast", "x264-params": f"bframes=2:b-adapt=0:keyint={FPS}:min-keyint={FPS}"}
        for i, frame in enumerate(src.decode(video=0)):
            if i >= CLIP_S * FPS:
                break
            scaled = frame.reformat(width=SIZE[0], height=SIZE[1], format="yuv420p")
            scaled.pts, scaled.time_base = i, Fraction(1, FPS)
            for p in s.encode(scaled):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def decoded(path: str) -> tuple[tuple[int, int], list[float]]:
    with av.open(path) as rec:
        v = rec.streams.video[0]
        return (v.codec_context.width, v.codec_context.height), [float(f.time) for f in rec.decode(v)]


def verify(alert_id: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", "alerts", "verify", alert_id, "--data-dir",
                           str(data_dir)], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_a_20_s_alert_on_a_10_s_looped_1080p_file_is_one_recording_with_its_preroll(tmp_path):
    clip = tmp_path / "clip1080.mp4"
    make_1080p_clip(clip)
    data = tmp_path / "data"
    config = ServeConfig(port=0, data_dir=data, verdict=TWITCHY,
                         evidence=EvidencePolicy(pre_capture_s=PRE_S, post_capture_s=POST_S),
                         sources=[SourceConfig(name="loop", url=str(clip), loop=True)])
    msgs: list[dict] = []
    with LiveServer(config, [FakeForAWhile()], detector=OneFace()) as server:
        server.service.bus.subscribe(WIRE, msgs.append, wire=True)
        start = wait_for(msgs, is_alert("start"), 60)
        assert start is not None, "no alert"
        end = wait_for(msgs, lambda m: is_alert("end")(m) and m["id"] == start["id"], FAKE_FOR_S + 60)
        assert end is not None, "the alert did not end"
    assert end["ended_at"] - end["started_at"] >= FAKE_FOR_S - 1.5  # the alert lasted ~20 s: two loops of the file
    ev = end["evidence"]
    assert ev["recording_state"] == "complete"
    size, times = decoded(ev["recording"])
    assert size == SIZE  # the source's own resolution (remuxed)
    duration = times[-1] - times[0] + 1 / FPS
    assert duration >= FAKE_FOR_S + 3.0, duration  # the whole alert plus its pre-roll
    steps = np.diff(times)
    assert steps.min() > 0 and steps.max() <= 1.5 / FPS, (steps.min(), steps.max())  # one rising clock, no hole
    assert abs(len(times) - duration * FPS) <= 1
    manifest = json.loads((Path(ev["recording"]).parent / "manifest.json").read_text())
    recording = manifest["recording"]
    assert recording["first_fake"] >= PRE_S - 1.0  # the pre-roll is there, ahead of the first fake frame
    breaks = recording["discontinuities"]
    assert len(breaks) >= 2 and {b["reason"] for b in breaks} == {"new connection"}  # each loop, noted
    assert all(0 < b["t"] < duration for b in breaks)
    assert (recording["width"], recording["height"]) == SIZE and manifest["cut"] is None
    track = json.loads(Path(ev["overlay"]).read_text())
    ts = [f["t"] for f in track["frames"]]
    # the overlays follow the loops too: in order, across the first loop, with no gap where the clock broke
    assert ts and ts == sorted(ts) and ts[0] < breaks[0]["t"] < ts[-1] and max(np.diff(ts)) <= 1.0
    done = verify(end["id"], data)
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr


def test_an_rtsp_camera_restarted_mid_alert_is_one_recording(tmp_path):
    from support.rtsp_server import RtspServer, unavailable_reason

    require("GStreamer's RTSP server", unavailable_reason())
    data = tmp_path / "data"
    with RtspServer(FFPP / "fake" / "Deepfakes_519_515.mp4") as camera:
        config = ServeConfig(port=0, data_dir=data, verdict=TWITCHY,
                             evidence=EvidencePolicy(pre_capture_s=2.0, post_capture_s=1.0),
                             sources=[SourceConfig(name="cam", url=camera.url)])
        msgs: list[dict] = []
        with LiveServer(config, [AlwaysFake()], detector=OneFace()) as server:
            server.service.bus.subscribe(WIRE, msgs.append, wire=True)
            start = wait_for(msgs, is_alert("start"), 60)
            assert start is not None, "no alert"
            time.sleep(3.0)
            source = next(s for s in server.service.scheduler.sources() if s.name == "cam")
            camera.restart()  # the camera crashes and comes back: a new RTSP session, its clock from 0 again
            deadline = time.monotonic() + 60
            while not (source.reconnects >= 1 and source.state.value == "streaming"):
                assert time.monotonic() < deadline, "the camera did not come back"
                time.sleep(0.2)
            back = time.monotonic()
            time.sleep(3.0)
            server.service.remove("cam")
            end = wait_for(msgs, lambda m: is_alert("end")(m) and m["id"] == start["id"], 30)
            assert end is not None
    assert end["evidence"]["recording_state"] == "complete" and end["id"] == start["id"]
    _, times = decoded(end["evidence"]["recording"])
    assert np.diff(times).min() > 0
    manifest = json.loads((Path(end["evidence"]["recording"]).parent / "manifest.json").read_text())
    breaks = manifest["recording"]["discontinuities"]
    assert [b["reason"] for b in breaks] == ["new connection"] and breaks[0]["wall_gap_s"] > 0
    assert times[-1] - breaks[0]["t"] >= 2.0  # frames after the reconnect are in the same recording
    assert breaks[0]["t"] >= 3.0  # and those before it
    assert time.monotonic() - back < 60
    done = verify(end["id"], data)
    assert done.returncode == 0, done.stdout + done.stderr
