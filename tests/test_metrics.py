"""GET /metrics after a short real run (synthetic frames, a one-face detector and an always-fake engine through
the real scheduler, judge, alerts and bus): the scrape parses with prometheus_client's parser and has the named
series with plausible values."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.config.serve import ServeConfig
from stream.config.verdicts import VerdictPolicy

from support.live_server import LiveServer
from support.serve_fakes import AlwaysFake, OneFace, Ticker, add_source, send

TWITCHY = VerdictPolicy(smoothing="ema", ema_alpha=1.0, t_high=0.7, t_low=0.3, k=1)  # one frame starts an alert
DOWN_REDIS = "redis://127.0.0.1:9/0"  # nothing listens: alerts go to the on-disk spool
RUN_S = 2.0


def scrape(live: LiveServer) -> dict[str, dict[tuple, float]]:
    code, text = send(live.config.port, "GET", "/metrics")
    assert code == 200, text
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(series: dict[str, dict[tuple, float]], name: str, **labels: str) -> float:
    return series[name][tuple(sorted(labels.items()))]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = ServeConfig(port=0, verdict=TWITCHY, redis=DOWN_REDIS, data_dir=tmp_path_factory.mktemp("metrics"))
    with LiveServer(config, [AlwaysFake()], detector=OneFace()) as live:
        add_source(live, Ticker("cam", fps=20, analysed_fps=10))

        async def watch() -> int:
            """A websocket client connected for the run: counted while here, and receives overlays."""
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(live.base.replace("http", "ws") + "/ws") as ws:
                    overlays = 0
                    deadline = time.monotonic() + RUN_S
                    while time.monotonic() < deadline:
                        try:
                            msg = await ws.receive(timeout=0.5)
                        except asyncio.TimeoutError:
                            continue
                        overlays += json.loads(msg.data).get("type") == "overlay"
                    live.metrics_during = scrape(live)  # type: ignore[attr-defined]
                    return overlays

        live.overlays = asyncio.run(watch())  # type: ignore[attr-defined]
        yield live


def test_scrape_parses_with_the_stream_series(run):
    assert run.overlays > 0
    s = run.metrics_during
    received = value(s, "dfstream_stream_frames_received_total", stream="cam")
    analysed = value(s, "dfstream_stream_frames_analysed_total", stream="cam")
    dropped = value(s, "dfstream_stream_frames_dropped_total", stream="cam")
    assert received >= 10 and 5 <= analysed <= received and 0 <= dropped <= received
    assert value(s, "dfstream_stream_reconnects_total", stream="cam") == 0
    assert value(s, "dfstream_stream_state", stream="cam", state="streaming") == 1
    assert value(s, "dfstream_stream_state", stream="cam", state="failed") == 0
    assert value(s, "dfstream_streams") == 1


def test_latency_histogram_has_the_overlays(run):
    s = run.metrics_during
    count = value(s, "dfstream_frame_to_verdict_seconds_count", stream="cam")
    total = value(s, "dfstream_frame_to_verdict_seconds_sum", stream="cam")
    assert count >= 5 and 0 < total / count < 2.0
    assert value(s, "dfstream_frame_to_verdict_seconds_bucket", stream="cam", le="+Inf") == count


def test_engine_batch_time_and_size(run):
    s = run.metrics_during
    batches = value(s, "dfstream_engine_batch_seconds_count", engine="always-fake")
    assert batches >= 5 and value(s, "dfstream_engine_batch_seconds_sum", engine="always-fake") < batches
    assert value(s, "dfstream_engine_batch_size_count", engine="always-fake") == batches
    assert value(s, "dfstream_engine_batch_size_sum", engine="always-fake") >= batches  # one face a frame
    assert value(s, "dfstream_engines") == 1


def test_alerts_websocket_and_spool(run):
    s = run.metrics_during
    assert value(s, "dfstream_alerts_total", event="start") >= 1
    assert value(s, "dfstream_websocket_clients") == 1
    assert value(s, "dfstream_websocket_dropped_messages_total") >= 0
    assert value(s, "dfstream_redis_up") == 0
    assert value(s, "dfstream_redis_spool_depth") >= 1  # the alert waits on disk for Redis
    assert value(s, "dfstream_webrtc_peers", kind="webcam") == 0


def test_removing_the_stream_ends_its_alert(run):
    assert send(run.config.port, "DELETE", "/api/streams/cam")[0] == 200
    deadline = time.monotonic() + 10
    while True:
        s = scrape(run)
        if value(s, "dfstream_alerts_total", event="end") >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert value(s, "dfstream_alerts_total", event="end") >= 1
    assert "dfstream_stream_frames_received_total" not in s or not s["dfstream_stream_frames_received_total"]
    assert value(s, "dfstream_websocket_clients") == 0


def test_readyz_counts_a_spooling_bus_as_ready(run):
    code, text = send(run.config.port, "GET", "/readyz")
    body = json.loads(text)
    bus = body["checks"]["bus"]
    assert code == 200 and body["ready"] and bus == {
        "ok": True, "kind": "redis", "connected": False, "spooled": bus["spooled"], "error": bus["error"]}
    assert "connecting to 127.0.0.1:9" in bus["error"]  # why Redis takes nothing (with the token: loopback here)
    assert body["checks"]["engines"]["loaded"] == ["always-fake"]


def test_each_app_has_its_own_registry(tmp_path):
    """Two servers in one process: neither sees the other's series (no global registry)."""
    with LiveServer(ServeConfig(port=0, data_dir=tmp_path), [], detector=OneFace()) as other:
        s = scrape(other)
        assert not s.get("dfstream_stream_frames_received_total")
        assert not s.get("dfstream_frame_to_verdict_seconds_count")
