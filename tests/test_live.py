"""The live pipeline with real parts: sources, buffers, scheduler, hub and the serve app over websockets."""

import asyncio
import dataclasses
import json
import random
import time
from dataclasses import dataclass

import numpy as np
import pytest

from engines.registry import DEFAULT_MODEL, build_engine
from stream.config.serve import ConfigError, ServeConfig, expand_env, load_config, source_name_for
from stream.config.sources import Backoff, SourcePolicy
from stream.live.sources.buffer import BufferPolicy, LatestFrameBuffer
from stream.live.server.hub import Client, Hub
from stream.config.scheduler import SchedulerConfig
from stream.live.scheduler.governor import Decision, LoadGovernor
from stream.live.scheduler.loop import Scheduler
from stream.live.sources.live import AVLiveSource, SourceConfig, StreamSource, validate_url
from stream.live.sources import Frame, SourceError, SourceState

from support.shared import FFPP, MESONET_WEIGHTS
from support.live_server import LiveServer, collect
from support.serve_fakes import NoFaces


def frame(i: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), i, i / 25, i, time.monotonic())


def test_drop_oldest_buffer_keeps_newest_and_counts():
    buf = LatestFrameBuffer(2, BufferPolicy.DROP_OLDEST)
    for i in range(5):
        assert buf.put(frame(i))
    assert buf.dropped == 3 and len(buf) == 2
    assert buf.take_latest().index == 4 and buf.dropped == 4
    assert buf.take_latest() is None and buf.received == 5 and buf.taken == 1


def test_wait_buffer_loses_nothing():
    buf = LatestFrameBuffer(1, BufferPolicy.WAIT)
    assert buf.put(frame(0))
    assert not buf.put(frame(1), timeout=0.05)  # full: the producer waits instead of dropping
    got = []
    import threading

    def consume():
        while len(got) < 3:
            f = buf.take_latest()
            if f is not None:
                got.append(f.index)
            time.sleep(0.01)

    t = threading.Thread(target=consume)
    t.start()
    assert buf.put(frame(1), timeout=2) and buf.put(frame(2), timeout=2)
    t.join(5)
    assert got == [0, 1, 2] and buf.dropped == 0


def test_backoff_grows_caps_and_jitters():
    b = Backoff(initial_s=0.5, factor=2, max_s=4, jitter=0.2)
    rng = random.Random(1)
    delays = [b.delay(a, rng) for a in range(8)]
    for a, d in enumerate(delays):
        base = min(4, 0.5 * 2 ** a)
        assert 0.8 * base <= d <= 1.2 * base
    assert len({round(d, 6) for d in delays[4:]}) > 1  # capped delays still differ: jitter


def test_config_refuses_unknown_keys_and_fills_secrets(tmp_path, monkeypatch):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("sources:\n  - name: door\n    url: rtsp://admin:${CAM_PASS}@127.0.0.1:8554/door\n"
                   "models: [meso4-df]\n")
    monkeypatch.setenv("CAM_PASS", "hunter2")
    config = load_config(cfg)
    assert config.sources[0].url == "rtsp://admin:hunter2@127.0.0.1:8554/door"
    assert config.sources[0].kind == "rtsp" and config.sources[0].rtsp_transport == "tcp"
    monkeypatch.delenv("CAM_PASS")
    with pytest.raises(ConfigError, match="CAM_PASS is not set"):
        load_config(cfg)
    cfg.write_text("sources: []\nframerate: 5\n")
    with pytest.raises(ConfigError, match="framerate"):
        load_config(cfg)
    cfg.write_text("sources:\n  - {name: a, url: x.mp4}\n  - {name: a, url: y.mp4}\n")
    with pytest.raises(ConfigError, match="unique"):
        load_config(cfg)
    assert expand_env({"a": ["${X}"]}, {"X": "1"}) == {"a": ["1"]}
    assert source_name_for("rtsp://u:p@cam.local:554/s", {"cam.local"}) == "cam.local-2"


@pytest.mark.parametrize("url, message", [
    ("rtsp://host:notaport/x", "malformed address"),
    ("rtsp:///nohost", "no host"),
    ("gopher://x/y", "unsupported scheme"),
    ("/no/such/file.mp4", "no such file"),
])
def test_bad_addresses_refused_before_starting(url, message):
    with pytest.raises(SourceError, match=message):
        validate_url(url)


def test_file_that_is_not_video_fails_clearly(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    src = AVLiveSource(SourceConfig(name="bad", url=str(bad)))
    src.start()
    deadline = time.monotonic() + 10
    while src.state is not SourceState.FAILED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert src.state is SourceState.FAILED and "cannot open as video" in src.error
    src.stop()


def test_unreachable_host_reconnects_with_error_and_never_leaks_password():
    src = AVLiveSource(SourceConfig(name="cam", url="rtsp://admin:pw123@127.0.0.1:9/cam", watchdog_s=2,
                                    backoff=Backoff(initial_s=0.1, max_s=0.2)))
    src.start()
    deadline = time.monotonic() + 30  # two refused connects and two 0.1-0.2 s back-offs take well under 1 s
    while src.reconnects < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    status = src.status()
    src.stop()
    assert status["state"] in ("reconnecting", "connecting") and status["reconnects"] >= 2
    assert "Connection refused" in status["error"]
    assert "pw123" not in str(status) and status["url"] == "rtsp://***@127.0.0.1:9/cam"


class _Idle(StreamSource):
    def __init__(self, name: str, fps: float) -> None:
        super().__init__(name, name, LatestFrameBuffer(), fps)


@dataclass(frozen=True)
class _Governed:
    """What the governor reads of a stream, frozen: the governor decides, it never changes a stream."""

    name: str
    analysed_fps: float
    order: int
    shed: bool = False
    priority: int = 0
    attention: int = 0


def test_load_lowers_rates_fairly_before_shedding_and_recovers():
    """Through the scheduler, which applies the governor's decisions to its streams."""
    sched = Scheduler(detector=None, engines=[], publish=lambda m: None,  # type: ignore[arg-type]
                      config=SchedulerConfig(min_fps=1.0))
    governor = sched.governor
    streams = {"a": sched.add(_Idle("a", 8.0)), "b": sched.add(_Idle("b", 4.0))}
    for _ in range(6):
        sched.govern(0.99)
    # both lowered by the same factor: the ratio of their targets is kept
    assert sched.target_fps(streams["a"]) / sched.target_fps(streams["b"]) == pytest.approx(2.0)
    assert not streams["a"].shed and not streams["b"].shed
    for _ in range(20):
        sched.govern(0.99)
    assert streams["b"].shed and not streams["a"].shed  # the most recent stream goes first, one stays
    assert any("paused" in e for e in governor.events)
    sched.govern(0.1)
    assert not streams["b"].shed and any("resumed" in e for e in governor.events)
    for _ in range(40):
        sched.govern(0.1)
    assert governor.scale == 1.0


def test_the_governor_returns_its_decisions_as_data_and_changes_no_stream():
    governor = LoadGovernor(SchedulerConfig(min_fps=1.0, load_smoothing=1.0))
    a, b = _Governed("a", 2.0, order=1), _Governed("b", 2.0, order=2)
    first = governor.observe(0.99, [a, b])
    assert first == Decision("lower", 0.99, 0.8, streams=("a", "b")) and governor.scale == pytest.approx(0.8)
    assert first.text == "load 99%: analysed rates of a, b lowered to 80% of target"
    while (decision := governor.observe(0.99, [a, b])) is not None and decision.action == "lower":
        pass
    assert decision == Decision("shed", 0.99, governor.scale, "b", 1.0)  # the newest stream, named, not paused
    assert not b.shed and "stream b paused" in governor.events[-1]
    assert governor.observe(0.99, [a, b]) == decision  # not applied: the same decision again
    back = governor.observe(0.1, [a, dataclasses.replace(b, shed=True)])
    assert back == Decision("resume", 0.1, governor.scale, "b")
    assert governor.observe(0.1, [a, b]).action == "raise"


def test_one_slow_second_does_not_lower_rates_but_sustained_load_does():
    governor = LoadGovernor()
    one = [_Governed("a", 5.0, order=1)]
    for _ in range(5):
        governor.observe(0.7, one)
    governor.observe(1.0, one)  # one spike
    assert governor.scale == 1.0 and not governor.events
    for _ in range(3):
        governor.observe(1.0, one)
    assert governor.scale < 1.0


def test_the_scheduler_paces_streams_by_the_governors_rates():
    """The scheduler asks its governor for each stream's rate: a lowered scale spaces its picks out."""
    sched = Scheduler(detector=None, engines=[], publish=lambda m: None)  # type: ignore[arg-type]
    source = _Idle("cam", 5.0)
    st = sched.add(source)
    for _ in range(12):
        sched.governor.observe(0.99, sched.streams())
    assert sched.target_fps(st) == pytest.approx(sched.governor.target_fps(5.0)) and sched.target_fps(st) < 5.0
    frame = Frame.of(image=np.zeros((2, 2, 3), np.uint8), pts=0, time=0.0, index=0, received=0.0)
    now, picked = 0.0, 0
    while now < 20.0:
        source.buffer.put(frame)
        picked += bool(sched.due(now))
        now += 0.01
    assert picked / 20.0 == pytest.approx(sched.target_fps(st), rel=0.05)


def test_passes_that_start_late_keep_each_stream_at_its_target_rate():
    """Each pass starts a few ms after a stream is due (the loop naps between checks); the analysed rate must
    still be the target, not 1 / (period + lateness)."""
    sched = Scheduler(detector=None, engines=[], publish=lambda m: None)  # type: ignore[arg-type]
    source = _Idle("cam", 5.0)
    sched.add(source)
    frame = Frame.of(image=np.zeros((2, 2, 3), np.uint8), pts=0, time=0.0, index=0, received=0.0)
    rng = random.Random(0)
    now, picked = 0.0, 0
    while now < 60.0:
        source.buffer.put(frame)
        if sched.due(now):
            picked += 1
            now += rng.uniform(0.01, 0.15)  # the pass itself
        now += rng.uniform(0.0, 0.01)  # the nap, and whatever else delays the next check
    assert picked / 60.0 == pytest.approx(5.0, abs=0.05)


def test_slow_client_does_not_delay_fast_one_and_keeps_alerts():
    async def run():
        hub = Hub()
        fast_got, slow_got = [], []

        async def fast_send(text):
            fast_got.append(text)

        async def slow_send(text):
            await asyncio.sleep(0.05)
            slow_got.append(text)

        fast, slow = Client(fast_send), Client(slow_send)
        hub.clients |= {fast, slow}
        pumps = [asyncio.create_task(c.pump()) for c in (fast, slow)]
        deadline = time.monotonic() + 30  # generous: only a hang fails it; the claim is the order below
        for i in range(200):
            hub.publish({"type": "overlay", "stream": "s", "i": i})
            if i == 100:
                hub.publish({"type": "alert", "stream": "s", "id": "a1"})
            await asyncio.sleep(0)
        while len(fast_got) < 201 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        slow_when_fast_done = len(slow_got)  # how far the slow one had got when the fast one had everything
        while not any('"alert"' in t for t in slow_got) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for p in pumps:
            p.cancel()
        return slow_when_fast_done, fast_got, slow_got, slow.dropped

    slow_when_fast_done, fast_got, slow_got, dropped = asyncio.run(run())
    # The fast client got everything without waiting for the slow one: had it waited, the slow one (50 ms a
    # message) would have taken its ~200 by then; however loaded the machine, it had taken only a few.
    assert len(fast_got) == 201
    assert slow_when_fast_done < len(fast_got) // 4, slow_when_fast_done
    assert dropped > 100  # the slow one lost overlays...
    assert any('"alert"' in t for t in slow_got)  # ...but not the alert


def test_late_client_is_sent_open_and_recent_alerts_first():
    async def run():
        hub = Hub(ended_alerts_replayed=2)
        for i in range(4):  # four alerts start; three end, one stays open
            hub.publish({"type": "alert", "event": "start", "stream": "cam", "id": f"a{i}", "seq": 1})
        hub.publish({"type": "alert", "event": "update", "stream": "cam", "id": "a0", "seq": 2})
        for i in (1, 2, 3):
            hub.publish({"type": "alert", "event": "end", "stream": "cam", "id": f"a{i}", "seq": 2})
        hub.publish({"type": "alert", "event": "start", "stream": "other", "id": "b0", "seq": 1})
        hub.publish({"type": "overlay", "stream": "cam", "faces": []})  # not replayed: it is stale at once

        got: list[dict] = []

        async def send(text):
            got.append(json.loads(text))

        client = Client(send, streams={"cam"})
        hub.join(client)
        pump = asyncio.create_task(client.pump())
        hub.publish({"type": "alert", "event": "end", "stream": "cam", "id": "a0", "seq": 3})
        await asyncio.sleep(0.1)
        pump.cancel()
        return got

    got = asyncio.run(run())
    # the open alert's latest message, then the two most recent ended ones, then live traffic; no other stream's
    assert [(m["id"], m["event"], m["seq"]) for m in got] == [
        ("a0", "update", 2), ("a2", "end", 2), ("a3", "end", 2), ("a0", "end", 3)]


@pytest.fixture(scope="module")
def meso():
    return build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)


@pytest.mark.slow
def test_serve_two_file_sources_stream_boxes_and_status(meso):
    sources = [SourceConfig(name="real004", url=str(FFPP / "real" / "004.mp4"), loop=True),
               SourceConfig(name="df519", url=str(FFPP / "fake" / "Deepfakes_519_515.mp4"), loop=True)]
    # the API may add local files only under source_policy.allowed_paths (the config file's are trusted)
    policy = SourcePolicy(allowed_paths=[str(FFPP)])
    with LiveServer(ServeConfig(sources=sources, source_policy=policy), [meso]) as server:
        def enough(msgs):
            with_faces = {m["stream"] for m in msgs if m["type"] == "overlay" and m["faces"]}
            # heartbeats (with a measured frame rate), not only the statuses pushed when a source changed state
            statuses = {m["stream"] for m in msgs if m["type"] == "status" and m.get("fps")}
            return with_faces == {"real004", "df519"} and statuses == {"real004", "df519"}

        msgs = asyncio.run(collect(server.base.replace("http", "ws") + "/ws", enough, timeout=60))
        assert enough(msgs), [m["type"] for m in msgs]
        overlay = next(m for m in msgs if m["type"] == "overlay" and m["faces"])
        assert overlay["v"] == 1 and len(overlay["frame_size"]) == 2 and overlay["pts"] is not None
        face = overlay["faces"][0]
        assert len(face["box"]) == 4 and DEFAULT_MODEL in face["engines"]
        assert face["verdict"] == "low-quality" or 0.0 <= face["score"] <= 1.0
        assert face["verdict"] in ("real", "uncertain", "fake", "low-quality") and overlay["verdict"] is not None
        status = next(m for m in msgs if m["type"] == "status" and m.get("fps"))
        assert status["state"] == "streaming" and status["fps"] > 0 and "dropped" in status

        # subscribe to one stream only
        only = asyncio.run(collect(server.base.replace("http", "ws") + "/ws?streams=df519",
                                   lambda m: len(m) >= 6, timeout=30))
        assert {m["stream"] for m in only} == {"df519"}

        # add and remove through the API; bad input is refused with a reason
        code, body = server.api("POST", "/api/streams", {"url": "rtsp://h:bad/x"})
        assert code == 400 and "malformed address" in body
        code, body = server.api("POST", "/api/streams", {"nourl": 1})
        assert code == 400
        code, body = server.api("POST", "/api/streams", {"url": str(FFPP / "real" / "634.mp4"), "name": "r634"})
        assert code == 201
        assert server.api("DELETE", "/api/streams/r634")[0] == 200
        assert server.api("DELETE", "/api/streams/r634")[0] == 404


def test_origin_token_and_malformed_messages(meso):
    async def ws_probe(url, headers=None, send=None):
        import aiohttp

        async with aiohttp.ClientSession() as s:
            try:
                async with s.ws_connect(url, headers=headers, max_msg_size=0) as ws:
                    if send is None:
                        return "open"
                    await ws.send_str(send)
                    msg = await ws.receive(timeout=10)
                    return msg
            except aiohttp.WSServerHandshakeError as err:
                return err.status

    with LiveServer(ServeConfig(max_message_bytes=256), [meso], NoFaces()) as server:  # no sources: no MTCNN
        ws = server.base.replace("http", "ws") + "/ws"
        assert asyncio.run(ws_probe(ws, {"Origin": "https://evil.example"})) == 403
        assert asyncio.run(ws_probe(ws, {"Origin": server.base})) == "open"
        reply = asyncio.run(ws_probe(ws, send="{not json"))
        assert "malformed JSON" in reply.data
        reply = asyncio.run(ws_probe(ws, send='{"type": "subscribe", "streams": ["a"]}'))
        assert '"subscribed"' in reply.data
        reply = asyncio.run(ws_probe(ws, send="x" * 1000))  # larger than max_message_bytes
        assert reply.type.name in ("CLOSE", "CLOSED", "CLOSING") and reply.data == 1009

    with LiveServer(ServeConfig(host="127.0.0.2", token="s3cr3t"), [meso], NoFaces()) as server:
        base = f"http://127.0.0.2:{server.config.port}"
        server.base  # noqa: B018
        import urllib.request

        for url, expect in [(base + "/api/streams", 401), (base + "/api/streams?token=wrong", 401),
                            (base + "/api/streams?token=s3cr3t", 200)]:
            try:
                code = urllib.request.urlopen(url, timeout=10).status
            except urllib.error.HTTPError as err:
                code = err.code
            assert code == expect, url
