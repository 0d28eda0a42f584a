"""Hardening of `serve`, against the real aiohttp app on a loopback port: the source policy for addresses sent
through the API, the limits (streams, WebRTC peers, relay viewers, websocket message rate), persisted cameras,
and the health endpoints.

Each refusal is its own test (a row of one table where they share a shape), and each checks that the refused
request changed nothing: no stream added, no peer or viewer opened, the persisted streams file as it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from stream.config.serve import ServeConfig
from stream.config.sources import SourceConfig, SourcePolicy
from stream.live.server.persist import STREAMS_FILE

from support.live_server import LiveServer
from support.serve_fakes import Idle, NoFaces, add_source, request_state, send, webrtc_offers

IDLE = "idle"
UNREACHABLE_CAMERA = "rtsp://127.0.0.1:9/x"  # accepted by the policy; reconnects quietly, costs nothing
ALLOWED_LINK_LOCAL = "169.254.10.10"
METADATA_NAME = "metadata.example.test"  # made to resolve to 169.254.169.254 (see resolves_to_metadata)
REFUSED, FULL = 403, 503


def make_server(tmp: Path, **config) -> LiveServer:
    return LiveServer(ServeConfig(port=0, data_dir=tmp, **config), [], detector=NoFaces())


@pytest.fixture(scope="module")
def media_dir():
    with tempfile.TemporaryDirectory(prefix="dfstream-allowed-") as d:
        root = Path(d)
        (root / "clip.mp4").write_bytes(b"not really a video")
        yield root


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """Defaults: no http, no local paths, and the limits small enough to reach."""
    with make_server(tmp_path_factory.mktemp("strict"), max_streams=3, max_webrtc_peers=1,
                     max_relay_viewers=1) as live:
        add_source(live, Idle(IDLE))
        yield live


@pytest.fixture(scope="module")
def permissive(tmp_path_factory, media_dir):
    """http allowed, one folder of files allowed, one link-local camera listed."""
    policy = SourcePolicy(allow_http=True, allowed_paths=[str(media_dir)], allowed_addresses=[ALLOWED_LINK_LOCAL])
    with make_server(tmp_path_factory.mktemp("permissive"), source_policy=policy) as live:
        yield live


@pytest.fixture(scope="module")
def offers() -> dict[str, str]:
    return webrtc_offers()


def state(server: LiveServer) -> tuple:
    """What a refused request must leave as it was (the persisted file included)."""
    return request_state(server, saved=True)


def post_stream(server: LiveServer, url: str, name: str = "evil") -> tuple[int, str]:
    return send(server.config.port, "POST", "/api/streams", {"url": url, "name": name})


def refused(server: LiveServer, before: tuple, reply: tuple[int, str], reason: str, status: int = REFUSED) -> None:
    code, text = reply
    assert code == status and reason in text, reply
    assert state(server) == before, "a refused request changed something"


def accepted(server: LiveServer, url: str, name: str) -> None:
    code, text = post_stream(server, url, name)
    assert code == 201, text
    assert send(server.config.port, "DELETE", f"/api/streams/{name}")[0] == 200


@pytest.fixture
def resolves_to_metadata(monkeypatch):
    """The system resolver, except that METADATA_NAME answers 169.254.169.254 (as a rebinding DNS name would)."""
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host == METADATA_NAME:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 0))]
        if host == "unresolvable.example.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


# ------------------------------------------------------------------ source policy

# Addresses the API must refuse: (the server, the address, words its reason must say). `{media}` is the
# permissive server's allowed folder; METADATA_NAME and the unresolvable name answer as `resolves_to_metadata` says.
REFUSED_SOURCES = [
    # local paths
    pytest.param("strict", "/etc/passwd", "local files and devices may not be added", id="local-file"),
    pytest.param("strict", "/dev/video0", "source_policy.allowed_paths", id="device"),
    pytest.param("permissive", "clip.mp4", "absolute path", id="relative-path"),
    pytest.param("permissive", "/etc/passwd", "only under source_policy.allowed_paths", id="file-outside-allowed"),
    pytest.param("permissive", "{media}/../../../etc/passwd", "only under source_policy.allowed_paths", id="dotdot-out"),
    pytest.param("permissive", "{media}/passwd.mp4", "only under source_policy.allowed_paths", id="symlink-out"),
    pytest.param("permissive", "file://{media}/clip.mp4", "file:// scheme", id="file-scheme"),
    # schemes (the example first: the cloud metadata endpoint over http)
    pytest.param("strict", "http://169.254.169.254/latest", "allow_http", id="http-without-allow-http"),
    pytest.param("strict", "https://127.0.0.1:9/x", "allow_http", id="https-without-allow-http"),
    *[pytest.param("permissive", url, "scheme may not be added", id=url.split(":")[0])
      for url in ["udp://127.0.0.1:9", "tcp://127.0.0.1:9", "srt://127.0.0.1:9", "rtmp://127.0.0.1:9/x",
                  "gopher://127.0.0.1/"]],
    # link-local and metadata addresses
    pytest.param("strict", "rtsp://169.254.169.254/x", "link-local", id="link-local-rtsp"),
    pytest.param("permissive", "http://169.254.169.254/latest/meta-data/", "link-local", id="link-local-http-allowed"),
    pytest.param("strict", "rtsp://[fe80::1]/x", "link-local", id="ipv6-link-local"),
    pytest.param("strict", "rtsp://[::ffff:169.254.169.254]/x", "link-local", id="ipv4-mapped-link-local"),
    pytest.param("permissive", "http://[fd00:ec2::254]/latest", "metadata", id="aws-ipv6-metadata"),
    pytest.param("strict", f"rtsp://{METADATA_NAME}/x", "resolves to 169.254.169.254", id="name-resolving-to-link-local"),
    pytest.param("strict", "rtsp://unresolvable.example.test/x", "does not resolve", id="unresolvable-name"),
    pytest.param("permissive", "rtsp://169.254.10.11:9/x", "allowed_addresses", id="unlisted-neighbour-of-listed"),
]


@pytest.mark.parametrize(("server_name", "url", "reason"), REFUSED_SOURCES)
def test_a_source_the_policy_forbids_is_refused_and_changes_nothing(request, media_dir, resolves_to_metadata,
                                                                     server_name, url, reason):
    server = request.getfixturevalue(server_name)
    link = media_dir / "passwd.mp4"  # a symlink out of the allowed folder
    if not link.exists():
        os.symlink("/etc/passwd", link)
    before = state(server)
    refused(server, before, post_stream(server, url.format(media=media_dir)), reason)


def test_file_under_allowed_paths_is_accepted(permissive, media_dir):
    accepted(permissive, str(media_dir / "clip.mp4"), "clip")


def test_http_is_accepted_with_allow_http(permissive):
    accepted(permissive, "http://127.0.0.1:9/x.mjpg", "mjpeg")


def test_rtsp_is_accepted(strict):
    accepted(strict, UNREACHABLE_CAMERA, "door")


def test_listed_link_local_address_is_accepted(permissive):
    accepted(permissive, f"rtsp://{ALLOWED_LINK_LOCAL}:9/x", "listed")


def test_config_file_sources_are_trusted(tmp_path, media_dir):
    """The config file may name local files and link-local cameras: only the API is checked."""
    sources = [SourceConfig(name="local", url=str(media_dir / "clip.mp4")),
               SourceConfig(name="ll", url="rtsp://169.254.169.254:9/x")]
    with make_server(tmp_path, sources=sources) as live:
        assert {"local", "ll"} <= live.service.names()


# ------------------------------------------------------------------ limits


def test_stream_limit_refuses_with_503(strict):
    add_source(strict, Idle("idle-2"))
    add_source(strict, Idle("idle-3"))
    try:
        before = state(strict)
        refused(strict, before, post_stream(strict, UNREACHABLE_CAMERA, "fourth"), "max_streams", FULL)
    finally:
        strict.loop.call_soon_threadsafe(strict.service.remove, "idle-2")
        strict.loop.call_soon_threadsafe(strict.service.remove, "idle-3")
        while {"idle-2", "idle-3"} & strict.service.names():
            time.sleep(0.02)


def test_stream_limit_refuses_a_webcam_offer_before_negotiation(strict, offers):
    add_source(strict, Idle("idle-2"))
    add_source(strict, Idle("idle-3"))
    try:
        before = state(strict)
        reply = send(strict.config.port, "POST", "/offer", {"sdp": offers["webcam"], "type": "offer", "name": "c"})
        refused(strict, before, reply, "max_streams", FULL)
    finally:
        strict.loop.call_soon_threadsafe(strict.service.remove, "idle-2")
        strict.loop.call_soon_threadsafe(strict.service.remove, "idle-3")
        while {"idle-2", "idle-3"} & strict.service.names():
            time.sleep(0.02)


def test_webrtc_peer_limit_refuses_with_503(strict, offers):
    port = strict.config.port
    code, text = send(port, "POST", "/offer", {"sdp": offers["webcam"], "type": "offer", "name": "cam-1"})
    assert code == 200, text
    peer = json.loads(text)["peer"]
    try:
        before = state(strict)
        reply = send(port, "POST", "/offer", {"sdp": offers["webcam"], "type": "offer", "name": "cam-2"})
        refused(strict, before, reply, "already 1 WebRTC peers", FULL)
    finally:
        assert send(port, "DELETE", f"/offer/{peer}")[0] == 200


def test_relay_viewer_limit_refuses_with_503(strict, offers):
    port = strict.config.port
    code, text = send(port, "POST", f"/relay/{IDLE}", {"sdp": offers["viewer"], "type": "offer"})
    assert code == 200, text
    viewer = json.loads(text)["peer"]
    try:
        before = state(strict)
        reply = send(port, "POST", f"/relay/{IDLE}", {"sdp": offers["viewer"], "type": "offer"})
        refused(strict, before, reply, "already 1 relay viewers", FULL)
    finally:
        assert send(port, "DELETE", f"/relay/peer/{viewer}")[0] == 200


def test_websocket_message_rate_is_limited(tmp_path):
    """Past the burst, messages get one error reply and are ignored; the connection stays open, and once the
    client slows down it is answered again."""
    with make_server(tmp_path, ws_messages_per_s=5) as live:
        async def run() -> tuple[list[dict], dict]:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(live.base.replace("http", "ws") + "/ws") as ws:
                    for _ in range(40):
                        await ws.send_str('{"type": "subscribe", "streams": null}')
                    replies = []
                    while True:
                        try:
                            replies.append(json.loads((await ws.receive(timeout=0.5)).data))
                        except asyncio.TimeoutError:
                            break
                    await asyncio.sleep(0.5)  # the bucket refills
                    await ws.send_str('{"type": "subscribe", "streams": ["a"]}')
                    return replies, json.loads((await ws.receive(timeout=5)).data)

        replies, later = asyncio.run(run())
        errors = [r for r in replies if r["type"] == "error"]
        assert len(errors) == 1 and "at most 5 per second" in errors[0]["error"], replies
        assert sum(r["type"] == "subscribed" for r in replies) == 10  # the burst: twice the rate
        assert later == {"type": "subscribed", "streams": ["a"]}
        assert live.service.hub.refused_total() == 30


def test_websocket_flood_is_closed(tmp_path):
    """A client that never slows down is closed with 1008 (policy violation); the server carries on."""
    from stream.live.server.hub import FLOOD_REFUSALS

    with make_server(tmp_path, ws_messages_per_s=1) as live:
        async def run() -> int | None:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(live.base.replace("http", "ws") + "/ws") as ws:
                    for _ in range(FLOOD_REFUSALS + 10):
                        await ws.send_str("x")
                    while True:
                        msg = await ws.receive(timeout=10)
                        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                            return ws.close_code

        assert asyncio.run(run()) == 1008
        assert send(live.config.port, "GET", "/healthz")[0] == 200


# ------------------------------------------------------------------ persisted cameras


def test_api_stream_comes_back_after_a_restart_and_removal_sticks(tmp_path):
    with make_server(tmp_path) as live:
        assert post_stream(live, UNREACHABLE_CAMERA, "door")[0] == 201
    with make_server(tmp_path) as live:
        assert "door" in live.service.names()
        assert live.service.scheduler.stream("door").source.url == UNREACHABLE_CAMERA
        assert send(live.config.port, "DELETE", "/api/streams/door")[0] == 200
    with make_server(tmp_path) as live:
        assert "door" not in live.service.names()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # written by rename, nothing left


def test_removing_a_config_file_source_is_remembered(tmp_path):
    sources = [SourceConfig(name="lobby", url=UNREACHABLE_CAMERA)]
    with make_server(tmp_path, sources=sources) as live:
        assert "lobby" in live.service.names()
        assert send(live.config.port, "DELETE", "/api/streams/lobby")[0] == 200
    with make_server(tmp_path, sources=sources) as live:
        assert "lobby" not in live.service.names()
        # added again through the API: it is back, and stays back
        assert post_stream(live, UNREACHABLE_CAMERA, "lobby")[0] == 201
    with make_server(tmp_path, sources=sources) as live:
        assert "lobby" in live.service.names()


def test_api_streams_are_checked_again_at_restart(tmp_path):
    """A stream saved while http was allowed does not come back once it is not."""
    with make_server(tmp_path, source_policy=SourcePolicy(allow_http=True)) as live:
        assert post_stream(live, "http://127.0.0.1:9/x", "web")[0] == 201
    with make_server(tmp_path) as live:
        assert "web" not in live.service.names()


def test_corrupt_streams_file_is_set_aside(tmp_path):
    (tmp_path / STREAMS_FILE).write_text("{not json")
    sources = [SourceConfig(name="lobby", url=UNREACHABLE_CAMERA)]
    with make_server(tmp_path, sources=sources) as live:
        assert live.service.names() == {"lobby"}
    assert (tmp_path / f"{STREAMS_FILE}.bad").read_text() == "{not json"


def test_webcam_streams_are_not_persisted(tmp_path):
    with make_server(tmp_path) as live:
        add_source(live, Idle("cam"))
        assert send(live.config.port, "DELETE", "/api/streams/cam")[0] == 200
    assert not (tmp_path / STREAMS_FILE).exists()


# ------------------------------------------------------------------ health


def test_healthz_is_open(strict):
    assert send(strict.config.port, "GET", "/healthz") == (200, '{"alive": true}')


def test_readyz_without_engines_is_not_ready(strict):
    code, text = send(strict.config.port, "GET", "/readyz")
    body = json.loads(text)
    assert code == 503 and body["ready"] is False and body["checks"]["engines"]["ok"] is False
    assert body["checks"]["bus"]["ok"] and body["checks"]["scheduler"]["ok"]
    assert body["streams"]["states"][IDLE] == "idle"  # loopback: no token needed, names shown


@pytest.fixture(scope="module")
def tokened(tmp_path_factory):
    """Bound to 127.0.0.2, which is not a loopback *name*: the token is needed, as beyond loopback."""
    from support.serve_fakes import AlwaysFake

    config = ServeConfig(host="127.0.0.2", port=0, token="s3cret", data_dir=tmp_path_factory.mktemp("tok"))
    with LiveServer(config, [AlwaysFake()], detector=NoFaces()) as live:
        add_source(live, Idle("lobby"))
        yield live


def tok_get(live: LiveServer, path: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return send(live.config.port, "GET", path, address="127.0.0.2", **headers)


def test_healthz_needs_no_token(tokened):
    assert tok_get(tokened, "/healthz")[0] == 200


def test_readyz_without_token_names_no_stream(tokened):
    code, text = tok_get(tokened, "/readyz")
    body = json.loads(text)
    assert code == 200 and body["ready"] is True and body["streams"]["count"] == 1
    assert "lobby" not in text and "states" not in body["streams"] and "loaded" not in body["checks"]["engines"]


def test_readyz_with_token_names_the_streams(tokened):
    code, text = tok_get(tokened, "/readyz", "s3cret")
    assert code == 200 and json.loads(text)["streams"]["states"] == {"lobby": "idle"}


def test_metrics_need_the_token_beyond_loopback(tokened):
    code, text = tok_get(tokened, "/metrics")
    assert code == 401 and "dfstream_" not in text
    code, text = tok_get(tokened, "/metrics", "s3cret")
    assert code == 200 and 'dfstream_stream_frames_received_total{stream="lobby"}' in text
