"""Camera baselines in `serve` (stream/live/server/baselines.py, stream/live/verdicts/cameras.py), on the real app
(aiohttp, LiveService, scheduler, judge) with cheap stand-ins for the pixels: `Tinted` streams deliver noise in a
brightness band, `OneFace` finds one face in the middle, and `Brightness` scores a face by its mean brightness
(p(fake) = mean / 255), with a sharpness floor that a flat picture does not reach. So a dark stream is a quiet real
camera, a bright one is "already fake", and a flat one is all low-quality.

Learning live: the bar is fitted, saved in data_dir/baselines, used by the judge for that stream only, shown in
GET, the stream list and the status messages, and comes back after a restart. Every refusal answers 4xx with the
reason and changes nothing: the bar in force, its file and the other streams stay as they were.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engines.base import Engine, InputSpec
from engines.quality import QualityFloor
from stream.config.serve import ServeConfig
from stream.config.sources import SourceConfig
from stream.live.server.baselines import BASELINES_DIR
from stream.live.server.service import LiveService
from stream.live.sources import Frame
from stream.live.verdicts.baseline import Baseline, BaselineError, read, write

from support.live_server import LiveServer, collect
from support.serve_fakes import OneFace, Ticker, add_source, send

WEIGHTS = "ab" * 32  # the stand-in engine's "weights": a baseline is keyed by them
LEARN_S = 4.0  # at 10 analysed fps: ~40 updates, 4 blocks of 9 (2 needed)
ANALYSED_FPS = 10.0


class Brightness(Engine):
    """p(fake) = the crop's mean brightness; faces flatter than the floor are low-quality."""

    def __init__(self, weights: str = WEIGHTS) -> None:
        self.name, self.spec = "brightness", InputSpec(size=32)
        self.weights_sha256 = weights
        self.quality = QualityFloor(min_sharpness=5.0, source="test")

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return (crops.reshape(len(crops), -1).mean(axis=1) / 255.0).astype(np.float32)


class Tinted(Ticker):
    """Noise in [lo, hi] (a flat frame when lo == hi), `fps` frames a second."""

    def __init__(self, name: str, lo: int, hi: int) -> None:
        super().__init__(name, fps=20.0, analysed_fps=ANALYSED_FPS)
        self.lo, self.hi = lo, hi

    def _run(self) -> None:
        rng = np.random.default_rng(abs(hash(self.name)) % 2**32)
        i = 0
        while not self._stop.wait(1.0 / self.fps):
            image = rng.integers(self.lo, self.hi + 1, (96, 128, 3), dtype=np.uint8)
            self.deliver(Frame(image, pts=i, time=i / self.fps, index=i, received=time.monotonic()))
            i += 1


STREAMS = {"cam": (0, 50), "other": (0, 50), "spare": (0, 50), "bright": (200, 255), "flat": (30, 30)}


def start(data_dir: Path) -> LiveServer:
    server = LiveServer(ServeConfig(port=0, data_dir=data_dir), [Brightness()], OneFace()).__enter__()
    for name, (lo, hi) in STREAMS.items():
        add_source(server, Tinted(name, lo, hi))
    return server


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("baselines-data")


@pytest.fixture(scope="module")
def server(data_dir):
    live = start(data_dir)
    try:
        status, text = live.api("POST", "/api/streams/cam/baseline", {"seconds": LEARN_S})
        assert status == 201, text
        yield live
    finally:
        live.__exit__(None, None, None)


def baseline_path(server: LiveServer, name: str = "cam") -> Path:
    return server.config.data_dir / BASELINES_DIR / f"{name}.json"


def snapshot(server: LiveServer) -> tuple:
    """What a refused request must leave as it was: each stream's bar and policy, and every learned file."""
    bars = server.service.baselines.bars
    files = {p.name: p.read_bytes() for p in sorted((server.config.data_dir / BASELINES_DIR).glob("*"))}
    return ({n: json.dumps(bars.get(n).to_json() if bars.get(n) else None) for n in STREAMS},
            {n: bars.policy_for(n).t_high for n in STREAMS}, files)


def refused(server: LiveServer, reply: tuple[int, str], status: int, words: str, before: tuple) -> None:
    assert reply[0] == status and words in reply[1], reply
    assert snapshot(server) == before, "a refused request changed a bar or a file"


# ------------------------------------------------------------------ learned live


def test_a_bar_learned_live_is_saved_used_for_its_stream_only_and_shown(server):
    got = json.loads(server.api("GET", "/api/streams/cam/baseline")[1])
    bar = got["bar"]
    assert bar["origin"] == "learned" and bar["n_eff"] >= 2 and bar["alpha"] == 0.01 and bar["fps"] == ANALYSED_FPS
    assert bar["faces"] >= 18 and bar["rule"] in ("conformal", "bounded") and got["learning"] is None
    saved = read(baseline_path(server))  # the file the server wrote, valid and the same bar
    assert saved.threshold == bar["threshold"] and saved.engines[0].weights_sha256 == WEIGHTS
    bars = server.service.baselines.bars
    assert bars.policy_for("cam") == saved.verdict_policy()  # the judge's policy for this stream
    assert bars.policy_for("other") == server.config.verdict  # the others keep the global bar
    listed = json.loads(server.api("GET", "/api/streams")[1])
    assert listed["cam"]["baseline"]["bar"]["threshold"] == bar["threshold"] and "baseline" not in listed["other"]
    ws = server.base.replace("http", "ws") + "/ws?streams=cam"
    msgs = asyncio.run(collect(ws, lambda m: any(x.get("type") == "status" and "baseline" in x for x in m), 10))
    status = next(m for m in msgs if m.get("type") == "status" and "baseline" in m)
    assert status["baseline"]["bar"]["learned_at"] == bar["learned_at"]


def test_the_judge_judges_a_stream_at_its_own_bar():
    """A camera bar above the global one keeps a face held at 0.8 uncertain on that camera, fake elsewhere."""
    from stream.config.verdicts import VerdictPolicy
    from stream.live.scoring import Fusion
    from stream.live.verdicts.baseline import EngineKey, fit
    from stream.live.verdicts.cameras import CameraBars, CameraBaseline
    from stream.live.verdicts.judge import Judge
    from stream.live.verdicts.policy import TrackVerdict

    policy = VerdictPolicy()
    keys = [EngineKey(model="brightness", weights_sha256=WEIGHTS)]
    levels = (0.45, 0.68, 0.5, 0.66, 0.48)  # a noisy camera: its real faces wander up to 0.68
    noisy = [[{"brightness": v} for v in levels for _ in range(9)]]
    baseline = fit(noisy, policy, model="brightness", engines=keys, source="test", fps=5.0)
    assert baseline.threshold > 0.8
    bars = CameraBars(policy, keys, None, Fusion(), "brightness")
    bars.set("noisy", CameraBaseline(baseline, "learned", Path("x.json")))
    judge = Judge(policy, bars=bars)

    class Track:
        def __init__(self, stream):
            self.stream, self.id, self.verdict = stream, 1, TrackVerdict(policy)
            self.scores, self.evidence, self.gate, self.seen_at = {"brightness": 0.8}, None, None, None

    noisy_track, quiet_track = Track("noisy"), Track("quiet")
    for _ in range(5):
        judge.judge(noisy_track), judge.judge(quiet_track)
    assert quiet_track.verdict.verdict == "fake" and noisy_track.verdict.verdict == "uncertain"


def test_the_bar_survives_a_restart(server, data_dir):
    before = json.loads(server.api("GET", "/api/streams/cam/baseline")[1])["bar"]
    again = LiveServer(ServeConfig(port=0, data_dir=data_dir), [Brightness()], OneFace()).__enter__()
    try:
        add_source(again, Tinted("cam", 0, 50))
        after = json.loads(again.api("GET", "/api/streams/cam/baseline")[1])["bar"]
        assert after == before
        assert again.service.baselines.bars.policy_for("cam").t_high == before["threshold"]
    finally:
        again.__exit__(None, None, None)


def test_a_learned_file_for_other_weights_is_not_used_after_a_restart(server, data_dir):
    again = LiveServer(ServeConfig(port=0, data_dir=data_dir), [Brightness("cd" * 32)], OneFace()).__enter__()
    try:
        add_source(again, Tinted("cam", 0, 50))
        got = json.loads(again.api("GET", "/api/streams/cam/baseline")[1])
        assert got["bar"] is None and "other weights" in got["error"], got
        assert again.service.baselines.bars.policy_for("cam") == again.config.verdict
    finally:
        again.__exit__(None, None, None)
    assert baseline_path(server).is_file()  # kept on disk: the old weights may come back


def test_progress_is_visible_while_learning(server):
    reply: list = []
    thread = threading.Thread(target=lambda: reply.append(server.api("POST", "/api/streams/spare/baseline",
                                                                      {"seconds": 3})))
    thread.start()
    try:
        seen = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and thread.is_alive():
            seen.append(json.loads(server.api("GET", "/api/streams/spare/baseline")[1])["learning"])
            time.sleep(0.3)
        progress = [s for s in seen if s]
        assert progress and progress[-1]["seconds"] == 3 and progress[-1]["faces"] > 0
        assert progress[-1]["done"] > progress[0]["done"], progress
    finally:
        thread.join(30)
    assert reply[0][0] == 201, reply
    assert server.api("DELETE", "/api/streams/spare/baseline")[0] == 200


# ------------------------------------------------------------------ refusals: 4xx, nothing changed


@pytest.mark.parametrize("body", ['{"seconds": "60"}', '{"seconds": true}', '{"seconds": 0}', '{"seconds": -5}',
                                  '{"seconds": 1e9}', '{"seconds": 60, "alpha": 0.5}', '[60]', '{"seconds": ',
                                  '"sixty"'])
def test_a_bad_body_is_refused(server, body):
    before = snapshot(server)
    refused(server, send(server.config.port, "POST", "/api/streams/cam/baseline", body), 400, "seconds", before)


def test_an_unknown_stream_is_refused(server):
    before = snapshot(server)
    refused(server, server.api("POST", "/api/streams/nope/baseline", {"seconds": 1}), 404, "no such stream", before)
    refused(server, server.api("GET", "/api/streams/nope/baseline"), 404, "no such stream", before)
    refused(server, server.api("DELETE", "/api/streams/nope/baseline"), 404, "no such stream", before)


def test_too_few_samples_are_refused_and_the_old_bar_stays(server):
    before = snapshot(server)
    refused(server, server.api("POST", "/api/streams/cam/baseline", {"seconds": 0.5}), 422,
            "too few effective samples", before)
    got = json.loads(server.api("GET", "/api/streams/cam/baseline")[1])
    assert "too few effective samples" in got["error"] and got["bar"]["origin"] == "learned"


def test_a_stretch_the_model_already_calls_fake_is_refused(server):
    before = snapshot(server)
    refused(server, server.api("POST", "/api/streams/bright/baseline", {"seconds": 3}), 422,
            "already calls this stretch fake", before)


def test_a_low_quality_stretch_is_refused(server):
    before = snapshot(server)
    refused(server, server.api("POST", "/api/streams/flat/baseline", {"seconds": 2}), 422,
            "low-quality stretch", before)


def test_learning_twice_at_once_is_refused(server):
    first: list = []
    thread = threading.Thread(target=lambda: first.append(server.api("POST", "/api/streams/other/baseline",
                                                                      {"seconds": 3})))
    thread.start()
    try:
        bars = server.service.baselines.bars
        deadline = time.monotonic() + 5
        while bars.learning("other") is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        session = bars.learning("other")
        before = snapshot(server)
        refused(server, server.api("POST", "/api/streams/other/baseline", {"seconds": 60}), 409,
                "learning its baseline already", before)
        assert bars.learning("other") is session and session.seconds == 3  # the first session goes on
    finally:
        thread.join(30)
    assert first[0][0] == 201, first
    assert server.api("DELETE", "/api/streams/other/baseline")[0] == 200


def test_a_cross_site_request_learns_nothing(server):
    before = snapshot(server)
    refused(server, send(server.config.port, "POST", "/api/streams/cam/baseline", {"seconds": 1},
                         Origin="http://evil.example"), 403, "Origin", before)
    refused(server, send(server.config.port, "DELETE", "/api/streams/cam/baseline", Origin="http://evil.example"),
            403, "Origin", before)
    refused(server, send(server.config.port, "POST", "/api/streams/cam/baseline", '{"seconds": 1}',
                         content_type="text/plain"), 403, "Content-Type", before)


def test_removing_a_stream_while_it_learns_saves_nothing(server):
    add_source(server, Tinted("gone", 0, 50))
    reply: list = []
    thread = threading.Thread(target=lambda: reply.append(server.api("POST", "/api/streams/gone/baseline",
                                                                      {"seconds": 2})))
    thread.start()
    bars = server.service.baselines.bars
    deadline = time.monotonic() + 5
    while bars.learning("gone") is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert server.api("DELETE", "/api/streams/gone")[0] == 200
    thread.join(30)
    assert reply[0][0] == 409 and "removed while it was learning" in reply[0][1], reply
    assert not baseline_path(server, "gone").exists()


# ------------------------------------------------------------------ DELETE, and the config's baseline


def test_delete_goes_back_to_the_global_bar(server):
    status, text = server.api("POST", "/api/streams/other/baseline", {"seconds": LEARN_S})
    assert status == 201, text
    status, text = server.api("DELETE", "/api/streams/other/baseline")
    assert status == 200 and json.loads(text)["bar"] is None
    assert not baseline_path(server, "other").exists()
    assert server.service.baselines.bars.policy_for("other") == server.config.verdict
    before = snapshot(server)
    refused(server, server.api("DELETE", "/api/streams/other/baseline"), 404, "no baseline", before)


def test_a_config_baseline_is_used_and_cannot_be_deleted_through_the_api(server, tmp_path):
    learned = read(baseline_path(server))
    path = write(learned, tmp_path / "door.json")
    config = ServeConfig(port=0, data_dir=tmp_path / "data", sources=[
        SourceConfig(name="door", url="rtsp://127.0.0.1:9/x", analysed_fps=ANALYSED_FPS, baseline=path)])
    with LiveServer(config, [Brightness()], OneFace()) as live:
        got = json.loads(live.api("GET", "/api/streams/door/baseline")[1])
        assert got["bar"]["origin"] == "config" and got["bar"]["threshold"] == learned.threshold
        before = snapshot_of(live, "door")
        status, text = live.api("DELETE", "/api/streams/door/baseline")
        assert status == 409 and "config file" in text and snapshot_of(live, "door") == before


def snapshot_of(server: LiveServer, name: str) -> tuple:
    bars = server.service.baselines.bars
    return json.dumps(bars.get(name).to_json()), bars.policy_for(name).t_high


@pytest.mark.parametrize("change, words", [
    ({"engines": [{"model": "brightness", "weights_sha256": "cd" * 32}]}, "other weights"),
    ({"engines": [{"model": "meso4-f2f", "weights_sha256": WEIGHTS}]}, "learned with"),
    ({"fps": 5.0}, "analysed fps"),
])
def test_a_config_baseline_that_does_not_fit_is_refused_at_start(server, tmp_path, change, words):
    learned = read(baseline_path(server))
    path = write(Baseline.model_validate({**learned.model_dump(), **change}), tmp_path / "door.json")
    config = ServeConfig(port=0, data_dir=tmp_path / "data", sources=[
        SourceConfig(name="door", url="rtsp://127.0.0.1:9/x", analysed_fps=ANALYSED_FPS, baseline=path)])
    with pytest.raises(BaselineError, match=words):
        LiveService(config, [Brightness()], OneFace())


def test_the_status_says_when_the_governor_analyses_below_the_learned_rate(server):
    bars = server.service.baselines.bars
    assert bars.status("cam", ANALYSED_FPS)["slowed"] is False
    assert bars.status("cam", ANALYSED_FPS / 2)["slowed"] is True
