"""Request security against the real serve app on a loopback port (stream/live/server/auth.py).

Each refusal is its own test, and each checks that nothing changed: no stream added or removed, no webcam peer
or relay viewer opened. The last tests show the page's own requests still work. Requests are sent with
http.client so every header (Host included) is exactly what the test says.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time

import aiohttp
import pytest

from stream.config.serve import ServeConfig

from support.live_server import LiveServer
from support.serve_fakes import Idle, NoFaces, request_state, webrtc_offers

EXTRA_HOST = "dfstream.lan"  # an allowed_hosts entry: the page may be opened by this name too
EVIL = "evil.example"
IDLE = "idle"  # a stream that exists for the whole module, so removals can be tried
UNREACHABLE_CAMERA = "rtsp://127.0.0.1:9/x"  # accepted by the API; reconnects quietly, costs nothing
JSON_TYPE = "application/json"
REFUSED = 403
POLL_S = 0.02


@pytest.fixture(scope="module")
def server():
    config = ServeConfig(port=0, allowed_hosts=[EXTRA_HOST])
    with LiveServer(config, [], detector=NoFaces()) as live:
        yield live


@pytest.fixture(autouse=True)
def idle(server):
    """The idle stream is present before every test (a test that legitimately removes it put it back here)."""
    if IDLE not in server.service.names():
        server.loop.call_soon_threadsafe(server.service.add_source, Idle(IDLE))
        for _ in range(100):
            if IDLE in server.service.names():
                break
            time.sleep(POLL_S)
    assert IDLE in server.service.names()


@pytest.fixture(scope="module")
def offers() -> dict[str, str]:
    return webrtc_offers()


def state(server: LiveServer) -> tuple:
    return request_state(server)


def send(server: LiveServer, method: str, path: str, body: dict | str | None = None, *,
         content_type: str | None = JSON_TYPE, host: str | None = None, **headers: str) -> tuple[int, str]:
    """One request with exactly these headers (Origin=..., Sec_Fetch_Site=... as keyword arguments)."""
    port = server.config.port
    sent = {"Host": host or f"127.0.0.1:{port}"}
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    data = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    if data is not None and content_type is not None:
        sent["Content-Type"] = content_type
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def page_origin(server: LiveServer, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{server.config.port}"


def add_camera() -> dict:
    return {"url": UNREACHABLE_CAMERA, "name": "evil"}


def refused(server: LiveServer, before: tuple, reply: tuple[int, str], reason: str) -> None:
    status, text = reply
    assert status == REFUSED and reason in text, reply
    assert state(server) == before, "a refused request changed something"


# ------------------------------------------------------------------ Content-Type


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_non_json_post_adds_no_stream(server, content_type):
    """A cross-site <form> or text/plain fetch needs no preflight: its body is refused unread."""
    before = state(server)
    refused(server, before, send(server, "POST", "/api/streams", add_camera(), content_type=content_type),
            "Content-Type: application/json")


def test_text_plain_offer_opens_no_peer(server, offers):
    before = state(server)
    body = {"sdp": offers["webcam"], "type": "offer", "name": "evil"}
    refused(server, before, send(server, "POST", "/offer", body, content_type="text/plain"), "Content-Type")


def test_text_plain_relay_offer_opens_no_viewer(server, offers):
    before = state(server)
    body = {"sdp": offers["viewer"], "type": "offer"}
    refused(server, before, send(server, "POST", f"/relay/{IDLE}", body, content_type="text/plain"),
            "Content-Type")


def test_delete_with_a_non_json_body_removes_nothing(server):
    before = state(server)
    refused(server, before, send(server, "DELETE", f"/api/streams/{IDLE}", "x", content_type="text/plain"),
            "Content-Type")


# ------------------------------------------------------------------ Origin


def test_foreign_origin_post_adds_no_stream(server):
    before = state(server)
    refused(server, before, send(server, "POST", "/api/streams", add_camera(), Origin=f"https://{EVIL}"),
            "Origin")


def test_foreign_origin_offer_opens_no_peer(server, offers):
    before = state(server)
    body = {"sdp": offers["webcam"], "type": "offer", "name": "evil"}
    refused(server, before, send(server, "POST", "/offer", body, Origin=f"http://{EVIL}"), "Origin")


def test_foreign_origin_relay_offer_opens_no_viewer(server, offers):
    before = state(server)
    body = {"sdp": offers["viewer"], "type": "offer"}
    refused(server, before, send(server, "POST", f"/relay/{IDLE}", body, Origin=f"http://{EVIL}"), "Origin")


def test_foreign_origin_delete_removes_nothing(server):
    before = state(server)
    refused(server, before, send(server, "DELETE", f"/api/streams/{IDLE}", Origin=f"http://{EVIL}"), "Origin")


def test_loopback_origin_on_another_port_is_foreign(server):
    """Another local web app (a dev server on :3000) is another origin."""
    before = state(server)
    refused(server, before, send(server, "POST", "/api/streams", add_camera(), Origin="http://127.0.0.1:3000"),
            "Origin")


def test_null_origin_is_refused(server):
    """Sandboxed iframes and file:// pages send Origin: null."""
    before = state(server)
    refused(server, before, send(server, "POST", "/api/streams", add_camera(), Origin="null"), "Origin")


def test_foreign_origin_websocket_is_refused(server):
    async def probe() -> int:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.ws_connect(server.base.replace("http", "ws") + "/ws",
                                           headers={"Origin": f"http://{EVIL}"}):
                    return 101
            except aiohttp.WSServerHandshakeError as err:
                return err.status

    assert asyncio.run(probe()) == REFUSED


# ------------------------------------------------------------------ Sec-Fetch-Site


def test_cross_site_post_adds_no_stream(server):
    """Refused on Sec-Fetch-Site alone, even without an Origin header."""
    before = state(server)
    refused(server, before, send(server, "POST", "/api/streams", add_camera(), Sec_Fetch_Site="cross-site"),
            "cross-site")


def test_cross_site_offer_opens_no_peer(server, offers):
    before = state(server)
    body = {"sdp": offers["webcam"], "type": "offer"}
    refused(server, before, send(server, "POST", "/offer", body, Sec_Fetch_Site="cross-site"), "cross-site")


def test_cross_site_relay_offer_opens_no_viewer(server, offers):
    before = state(server)
    body = {"sdp": offers["viewer"], "type": "offer"}
    refused(server, before, send(server, "POST", f"/relay/{IDLE}", body, Sec_Fetch_Site="cross-site"),
            "cross-site")


def test_cross_site_delete_removes_nothing(server):
    before = state(server)
    refused(server, before, send(server, "DELETE", f"/api/streams/{IDLE}", Sec_Fetch_Site="cross-site"),
            "cross-site")


# ------------------------------------------------------------------ Host (DNS rebinding)


def rebound(server: LiveServer) -> dict[str, str]:
    """What a page at evil.example sends once its name resolves to 127.0.0.1: to the browser it is
    same-origin, so Origin and Sec-Fetch-Site look innocent; only Host gives it away."""
    authority = f"{EVIL}:{server.config.port}"
    return {"host": authority, "Origin": f"http://{authority}", "Sec_Fetch_Site": "same-origin"}


def test_rebound_host_cannot_read_the_api(server):
    status, text = send(server, "GET", "/api/streams", **rebound(server))
    assert status == REFUSED and "allowed_hosts" in text and IDLE not in text


def test_rebound_host_cannot_load_the_page(server):
    assert send(server, "GET", "/", **rebound(server))[0] == REFUSED


def test_rebound_host_post_adds_no_stream(server):
    before = state(server)
    refused(server, before, send(server, "POST", "/api/streams", add_camera(), **rebound(server)), "Host")


def test_rebound_host_offer_opens_no_peer(server, offers):
    before = state(server)
    body = {"sdp": offers["webcam"], "type": "offer", "name": "evil"}
    refused(server, before, send(server, "POST", "/offer", body, **rebound(server)), "Host")


def test_rebound_host_delete_removes_nothing(server):
    before = state(server)
    refused(server, before, send(server, "DELETE", f"/api/streams/{IDLE}", **rebound(server)), "Host")


def test_loopback_name_with_another_port_is_refused(server):
    """Only the bound port: a Host of localhost:other is not this server's name."""
    status, _ = send(server, "GET", "/api/streams", host="localhost:1")
    assert status == REFUSED


def test_rebound_host_websocket_is_refused(server):
    headers = rebound(server)

    async def probe() -> int:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.ws_connect(server.base.replace("http", "ws") + "/ws",
                                           headers={"Host": headers["host"], "Origin": headers["Origin"]}):
                    return 101
            except aiohttp.WSServerHandshakeError as err:
                return err.status

    assert asyncio.run(probe()) == REFUSED


# ------------------------------------------------------------------ what the page does still works


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", EXTRA_HOST])
def test_page_loads_by_every_allowed_name(server, host):
    status, _ = send(server, "GET", "/", host=f"{host}:{server.config.port}")
    assert status == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", EXTRA_HOST])
def test_page_adds_and_removes_a_camera(server, host):
    """The page's fetch: JSON body, its own Origin, same-origin; DELETE without a body or Content-Type."""
    page = {"host": f"{host}:{server.config.port}", "Origin": page_origin(server, host),
            "Sec_Fetch_Site": "same-origin"}
    status, text = send(server, "POST", "/api/streams", {"url": UNREACHABLE_CAMERA, "name": "door"}, **page)
    assert status == 201, text
    assert "door" in server.service.names()
    status, text = send(server, "DELETE", "/api/streams/door", content_type=None, **page)
    assert status == 200, text
    assert "door" not in server.service.names()


def test_clients_without_browser_headers_still_work(server):
    """CLI clients and scripts send no Origin or Sec-Fetch-Site; JSON is all they need."""
    status, text = send(server, "POST", "/api/streams", {"url": UNREACHABLE_CAMERA, "name": "script"})
    assert status == 201, text
    assert send(server, "DELETE", "/api/streams/script")[0] == 200


def test_page_opens_and_closes_webcam_and_relay_peers(server, offers):
    page = {"Origin": page_origin(server), "Sec_Fetch_Site": "same-origin"}
    status, text = send(server, "POST", "/offer", {"sdp": offers["webcam"], "type": "offer", "name": "cam"},
                        **page)
    assert status == 200, text
    peer = json.loads(text)["peer"]
    assert send(server, "DELETE", f"/offer/{peer}", **page)[0] == 200
    status, text = send(server, "POST", f"/relay/{IDLE}", {"sdp": offers["viewer"], "type": "offer"}, **page)
    assert status == 200, text
    viewer = json.loads(text)["peer"]
    assert send(server, "DELETE", f"/relay/peer/{viewer}", **page)[0] == 200
    assert state(server) == ([IDLE], 0, 0)


def test_page_websocket_opens_from_its_own_origin(server):
    async def probe() -> str:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(server.base.replace("http", "ws") + "/ws",
                                       headers={"Origin": page_origin(server, "localhost")}) as ws:
                await ws.send_str('{"type": "subscribe", "streams": null}')
                return (await ws.receive(timeout=10)).data

    assert '"subscribed"' in asyncio.run(probe())
