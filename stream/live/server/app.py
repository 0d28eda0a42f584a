"""The HTTP side of `serve` (aiohttp): the websocket at /ws, the stream API, WebRTC signalling and the page.

Everything shares one port. Bound to loopback it is open to the local user; bound beyond it, every request must
carry the token (`?token=` or `Authorization: Bearer`). The websocket checks Origin so a web page on another site
cannot read the overlays through the user's browser.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from stream.live.server.hub import Client
from stream.live.server.service import LiveService
from stream.live.sources import SourceError

log = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parents[3] / "web"
SERVICE_KEY = web.AppKey("service", LiveService)
WS_HEARTBEAT_S = 20.0
PUBLIC_PATHS = ("/", "/favicon.ico")  # the page and its code hold no data: it loads, then asks for the token
PUBLIC_PREFIXES = ("/static/",)
EVIDENCE_ID = re.compile(r"^[0-9a-f]{32}$")  # alert ids: uuid4 hex
EVIDENCE_FILES = {"snapshot.jpg": "image/jpeg", "clip.mp4": "video/mp4"}


def _token_ok(request: web.Request, service: LiveService) -> bool:
    cfg = service.config
    if not cfg.needs_token:
        return True
    given = request.query.get("token") or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(cfg.token) and hmac.compare_digest(given.encode(), cfg.token.encode())  # type: ignore[union-attr]


def _origin_ok(request: web.Request, service: LiveService) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser (CLI clients, tests): nothing to protect against
        return True
    host = request.headers.get("Host", "")
    allowed = {f"http://{host}", f"https://{host}", *service.config.allowed_origins}
    port = urlsplit(f"http://{host}").port
    allowed |= {f"http://{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}
    return origin in allowed


@web.middleware
async def auth_middleware(request: web.Request, handler):
    service = request.app[SERVICE_KEY]
    public = request.method in ("GET", "HEAD") and (
        request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES))
    if not public and not _token_ok(request, service):
        raise web.HTTPUnauthorized(text="this server needs its access token: open the page with ?token=TOKEN")
    return await handler(request)


async def ws_handler(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    if not _origin_ok(request, service):
        raise web.HTTPForbidden(text="websocket Origin not allowed")
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, max_msg_size=service.config.max_message_bytes)
    await ws.prepare(request)
    streams = request.query.get("streams")
    client = Client(ws.send_str, set(streams.split(",")) if streams else None)
    service.hub.join(client)
    pump = asyncio.create_task(client.pump())
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                reply = _client_message(client, msg.data)
                if reply:
                    await ws.send_str(json.dumps(reply))
            elif msg.type == WSMsgType.BINARY:
                await ws.send_str(json.dumps({"type": "error", "error": "binary messages are not accepted"}))
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        client.closed = True
        service.hub.clients.discard(client)
        pump.cancel()
    return ws


def _client_message(client: Client, text: str) -> dict | None:
    """Clients may only (re)subscribe; anything else gets an error reply and the connection stays open."""
    try:
        msg = json.loads(text)
    except json.JSONDecodeError:
        return {"type": "error", "error": "malformed JSON"}
    if not isinstance(msg, dict) or msg.get("type") != "subscribe":
        return {"type": "error", "error": "unknown message; send {\"type\": \"subscribe\", \"streams\": [...]}"}
    streams = msg.get("streams")
    if streams is None:
        client.streams = None
    elif isinstance(streams, list) and all(isinstance(s, str) for s in streams):
        client.streams = set(streams)
    else:
        return {"type": "error", "error": "streams must be a list of names or null"}
    return {"type": "subscribed", "streams": None if client.streams is None else sorted(client.streams)}


async def list_streams(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response({s.name: s.status() for s in service.scheduler.sources()})


async def add_stream(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    try:
        body = await request.json()
        url = body["url"]
        if not isinstance(url, str):
            raise TypeError
    except (json.JSONDecodeError, KeyError, TypeError):
        raise web.HTTPBadRequest(text='send JSON {"url": "rtsp://...", "name": "optional"}') from None
    try:
        source = service.add_url(url, body.get("name"), bool(body.get("loop", False)))
    except (SourceError, ValueError) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response({"name": source.name, "url": source.url}, status=201)


async def remove_stream(request: web.Request) -> web.Response:
    if not request.app[SERVICE_KEY].remove(request.match_info["name"]):
        raise web.HTTPNotFound(text="no such stream")
    return web.json_response({"removed": request.match_info["name"]})


async def index(request: web.Request) -> web.StreamResponse:
    page = WEB_ROOT / "index.html"
    if page.is_file():
        return web.FileResponse(page)
    return web.Response(text="dfstream is running: overlays on ws://HOST:PORT/ws, streams at /api/streams\n")


async def evidence(request: web.Request) -> web.StreamResponse:
    """An alert's snapshot or clip: /evidence/<alert id>/<snapshot.jpg|clip.mp4>. Only those two names under
    ids of the alert-id form are served, so no request can reach outside the evidence folder."""
    alert_id, name = request.match_info["id"], request.match_info["file"]
    if not EVIDENCE_ID.match(alert_id) or name not in EVIDENCE_FILES:
        raise web.HTTPNotFound(text="no such evidence")
    root = request.app[SERVICE_KEY].evidence.root.resolve()
    path = (root / alert_id / name).resolve()
    if path.parent.parent != root or not path.is_file():
        raise web.HTTPNotFound(text="no such evidence (not written yet, or removed by retention)")
    return web.FileResponse(path, headers={"Content-Type": EVIDENCE_FILES[name], "Cache-Control": "private"})


def build_app(service: LiveService) -> web.Application:
    app = web.Application(middlewares=[auth_middleware], client_max_size=service.config.max_message_bytes * 16)
    app[SERVICE_KEY] = service
    app.router.add_get("/", index)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/api/streams", list_streams)
    app.router.add_post("/api/streams", add_stream)
    app.router.add_delete("/api/streams/{name}", remove_stream)
    app.router.add_get("/evidence/{id}/{file}", evidence)
    try:
        from stream.live.server import relay, webcam as webrtc
    except ImportError as exc:  # aiortc missing: the rest of serve still works
        log.warning("WebRTC disabled: %s", exc)
    else:
        webrtc.setup(app, service)
        relay.setup(app, service)
    if (WEB_ROOT / "static").is_dir():
        app.router.add_static("/static/", WEB_ROOT / "static")

    async def on_startup(app: web.Application) -> None:
        service.hub.bind(asyncio.get_running_loop())
        service.start()

    async def on_cleanup(app: web.Application) -> None:
        await service.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
