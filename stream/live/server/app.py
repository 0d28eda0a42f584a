"""The HTTP side of `serve` (aiohttp): the websocket at /ws, the stream API, WebRTC signalling and the page.

Everything shares one port, and `build_app` lists every route in one table. Each feature starts and stops in
its own `cleanup_ctx` (the service, then the WebRTC webcams and the relay), torn down in reverse order. Every
request first passes `auth.py`: its Host must be one of this server's names, its token must match when the
server is bound beyond loopback, and a state-changing request must be JSON from an allowed Origin.

Camera baselines: `GET/POST/DELETE /api/streams/<name>/baseline` (baselines.py). `GET /api/model`: the engines,
and what `--model auto` decided.

Operations: `GET /metrics` (Prometheus text, metrics.py; the token beyond loopback like every route),
`GET /healthz` (alive; open to probes) and `GET /readyz` (engines loaded and the bus up or spooling; open to
probes, but stream names only with the token), `POST /api/alerts/<id>/explanation` (an alert's cited
explanation, built by the explainer `dfstream serve` passes in, on its own worker thread). Limits refuse with 503
and the reason: `max_streams`, `max_webrtc_peers`, `max_relay_viewers`; a websocket client over
`ws_messages_per_s` gets an error reply.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import WSMsgType, web

from stream.live.evidence.names import ALERT_ID, CONTENT_TYPES
from stream.live.server import auth, baselines, malloc
from stream.live.server.priority import make_handler as priority_handler, parse_priority
from stream.live.server.hub import Client
from stream.live.server.metrics import CONTENT_TYPE_LATEST, Metrics
from stream.live.server.service import LiveService, RemoteUnavailable, StreamLimit
from stream.live.sources import SourceError

try:  # WebRTC is optional: without aiortc (or with an aiortc these reads were not checked against) the rest runs
    from stream.live.server import aiortc_compat, relay, webcam

    aiortc_compat.check()
    WEBRTC_DISABLED: str | None = None
except ImportError as exc:  # includes aiortc_compat.AiortcIncompatible
    aiortc_compat = relay = webcam = None  # type: ignore[assignment]
    WEBRTC_DISABLED = f"WebRTC disabled: {exc}"

log = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parents[3] / "web"
SERVICE_KEY = web.AppKey("service", LiveService)
METRICS_KEY = web.AppKey("metrics", Metrics)
WS_POLICY_VIOLATION = 1008  # websocket close code for a client that keeps flooding
WS_HEARTBEAT_S = 20.0
EVIDENCE_ID = ALERT_ID
# only these names are ever served from an alert's folder (the explanation's heatmap too)
EVIDENCE_FILES = {**CONTENT_TYPES, "explanation.png": "image/png"}
# An alert's explanation (stream/jobs/explain/alerts.py, given to build_app by `dfstream serve`): alert id -> the
# explanation record, cached in the alert's evidence folder. Run on its own worker thread, never the event loop or
# the scoring thread: Grad-CAM and an LLM call take seconds.
Explainer = Callable[[str], dict]
EXPLAINER_KEY = web.AppKey("explainer", object)
EXPLAIN_POOL_KEY = web.AppKey("explain_pool", ThreadPoolExecutor)
UPLOAD_LIMIT_FACTOR = 16  # request bodies (SDP offers) may be this many client messages long


async def ws_handler(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, max_msg_size=service.config.max_message_bytes)
    await ws.prepare(request)
    streams = request.query.get("streams")
    client = Client(ws.send_str, set(streams.split(",")) if streams else None, service.config.ws_messages_per_s)
    service.hub.join(client)
    pump = asyncio.create_task(client.pump())
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and client.limit and not client.limit.allow():
                if client.limit.flooding:
                    await ws.close(code=WS_POLICY_VIOLATION, message=b"too many messages")
                    break
                if client.limit.refused == 1:  # one error per run of refusals, not one per message
                    await ws.send_str(json.dumps({"type": "error", "error": "too many messages: at most "
                                                  f"{service.config.ws_messages_per_s:g} per second; ignored"}))
                continue
            if msg.type == WSMsgType.TEXT:
                reply = _client_message(client, msg.data)
                if reply:
                    await ws.send_str(json.dumps(reply))
            elif msg.type == WSMsgType.BINARY:
                await ws.send_str(json.dumps({"type": "error", "error": "binary messages are not accepted"}))
            elif msg.type == WSMsgType.ERROR:
                break
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:  # one client's trouble must never reach the server
        log.exception("websocket client failed")
    finally:
        client.closed = True
        service.hub.leave(client)
        pump.cancel()
    return ws


def _client_message(client: Client, text: str) -> dict | None:
    """Clients may only (re)subscribe; anything else gets an error reply and the connection stays open."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, and nesting too deep for the parser
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
    return web.json_response(service.statuses())


async def add_stream(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    try:
        body = await request.json()
        url = body["url"]
        if not isinstance(url, str):
            raise TypeError
    except (json.JSONDecodeError, KeyError, TypeError):
        raise web.HTTPBadRequest(text='send JSON {"url": "rtsp://...", "name": "optional"}') from None
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise web.HTTPBadRequest(text="name must be a string")
    try:
        priority = parse_priority(body.get("priority", 0))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    try:
        source = await service.api_add(url, name, bool(body.get("loop", False)), priority)
    except auth.SourceRefused as exc:
        raise web.HTTPForbidden(text=str(exc)) from None
    except (StreamLimit, RemoteUnavailable) as exc:
        raise web.HTTPServiceUnavailable(text=str(exc)) from None
    except (SourceError, ValueError) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response({"name": source.name, "url": source.url}, status=201)


async def remove_stream(request: web.Request) -> web.Response:
    try:
        removed = request.app[SERVICE_KEY].api_remove(request.match_info["name"])
    except RemoteUnavailable as exc:
        raise web.HTTPServiceUnavailable(text=str(exc)) from None
    if not removed:
        raise web.HTTPNotFound(text="no such stream")
    return web.json_response({"removed": request.match_info["name"]})


async def model_info(request: web.Request) -> web.Response:
    """GET /api/model: the engines that judge, and what `--model auto` decided (its warning when it fell back)."""
    service = request.app[SERVICE_KEY]
    return web.json_response({"engines": [e.name for e in service.scheduler.engines],
                              "auto": service.auto.to_json() if service.auto is not None else None})


async def index(request: web.Request) -> web.StreamResponse:
    page = WEB_ROOT / "index.html"
    if page.is_file():
        return web.FileResponse(page)
    return web.Response(text="dfstream is running: overlays on ws://HOST:PORT/ws, streams at /api/streams\n")


async def evidence(request: web.Request) -> web.StreamResponse:
    """An alert's evidence file: /evidence/<alert id>/<name>, name one of evidence.names (snapshot, strip,
    recording, overlay track, manifest). Only those names under ids of the alert-id form are served, so no
    request can reach outside the evidence folder. FileResponse answers Range requests (video seeking). A file
    written elsewhere (a cluster node) is first copied here by the remote (404 with its reason when it cannot)."""
    alert_id, name = request.match_info["id"], request.match_info["file"]
    if not EVIDENCE_ID.match(alert_id) or name not in EVIDENCE_FILES:
        raise web.HTTPNotFound(text="no such evidence")
    service = request.app[SERVICE_KEY]
    root = service.evidence.root.resolve()
    path = (root / alert_id / name).resolve()
    if path.parent.parent != root:
        raise web.HTTPNotFound(text="no such evidence")
    if not path.is_file() and service.remote is not None and name in CONTENT_TYPES:
        try:
            await asyncio.get_running_loop().run_in_executor(None, service.remote.fetch_evidence, alert_id, name,
                                                             path.parent)
        except LookupError as exc:
            raise web.HTTPNotFound(text=f"no such evidence here: {exc}") from None
        except OSError as exc:  # Redis unreachable, or this disk
            raise web.HTTPServiceUnavailable(text=f"evidence not reachable now: {type(exc).__name__}") from None
        service.evidence.submit(service.evidence.enforce_retention)  # the copies count against this gateway's limits
    if not path.is_file():
        raise web.HTTPNotFound(text="no such evidence (not written yet, or removed by retention)")
    return web.FileResponse(path, headers={"Content-Type": EVIDENCE_FILES[name], "Cache-Control": "private"})


async def explain_alert(request: web.Request) -> web.Response:
    """POST /api/alerts/<id>/explanation: the alert's cited explanation, built once on the explain worker thread
    (then read from its evidence folder). 404 for an unknown alert or evidence already removed, 422 when it cannot
    be explained, 503 when this server was started without explanations."""
    alert_id = request.match_info["id"]
    if not EVIDENCE_ID.match(alert_id):
        raise web.HTTPNotFound(text="no such alert")
    explainer = request.app.get(EXPLAINER_KEY)
    if explainer is None:
        raise web.HTTPServiceUnavailable(text="explanations are not enabled on this server")
    loop = asyncio.get_running_loop()
    try:
        record = await loop.run_in_executor(request.app[EXPLAIN_POOL_KEY], explainer, alert_id)
    except LookupError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    except ValueError as exc:
        raise web.HTTPUnprocessableEntity(text=str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - one alert's failure is reported, the server goes on
        log.exception("explaining alert %s failed", alert_id)
        raise web.HTTPInternalServerError(text=f"explaining this alert failed: {type(exc).__name__}") from None
    return web.json_response(record)


async def explain_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the one explain worker thread."""
    app[EXPLAIN_POOL_KEY] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")
    yield
    app[EXPLAIN_POOL_KEY].shutdown(wait=True, cancel_futures=True)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS_KEY].scrape(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers. Open to probes; says nothing else."""
    return web.json_response({"alive": True})


def readiness(service: LiveService) -> dict:
    """Engines loaded, the scheduler running, the bus connected or spooling."""
    sched = service.scheduler
    engines_ok = bool(sched.engines)
    sched_ok = sched.running
    stats = service.redis.stats() if service.redis is not None else {}
    if "redis_up" in stats:  # Redis, or its on-disk spool while Redis is down: either way no alert is lost
        bus = {"ok": True, "kind": "redis", "connected": bool(stats["redis_up"]), "spooled": stats.get("spool", 0)}
    else:
        bus = {"ok": True, "kind": "local"}
    checks = {"engines": {"ok": engines_ok, "loaded": [e.name for e in sched.engines],
                          **({"auto": service.auto.to_json()} if service.auto is not None else {})},
              "scheduler": {"ok": sched_ok}, "bus": bus}
    return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}


async def readyz(request: web.Request) -> web.Response:
    """200 when ready, else 503. Open to probes: without the token (when one is needed) the body counts streams
    by state but names none, and the engine list is left out."""
    service = request.app[SERVICE_KEY]
    body = readiness(service)
    sources = service.scheduler.sources()
    counts: dict[str, int] = {}
    for src in sources:
        counts[src.state.value] = counts.get(src.state.value, 0) + 1
    body["streams"] = {"count": len(sources), "by_state": counts}
    if request.app[auth.GUARD_KEY].token_ok(request):
        body["streams"]["states"] = {src.name: src.state.value for src in sources}
        if service.channels:  # queues, deliveries and dead letters of webhooks and MQTT (names: token only)
            body["channels"] = service.channels.stats()
        if service.redis is not None:  # why Redis is not taking alerts (a refused password names its variable)
            body["checks"]["bus"]["error"] = service.redis.stats()["last_error"]
    else:
        body["checks"]["engines"].pop("loaded")
        body["checks"]["engines"].pop("auto", None)
    return web.json_response(body, status=200 if body["ready"] else 503)


def refuse_when_full(handler):
    """A webcam offer adds a stream: refuse it (503) before any negotiation when max_streams are running."""
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            request.app[SERVICE_KEY].refuse_if_full()
        except StreamLimit as exc:
            raise web.HTTPServiceUnavailable(text=str(exc)) from None
        return await handler(request)
    return guarded


async def webrtc_disabled(request: web.Request) -> web.Response:
    """Stands in for the WebRTC routes when aiortc is missing, so the route table stays the same."""
    raise web.HTTPServiceUnavailable(text=WEBRTC_DISABLED or "WebRTC disabled")


async def service_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: sources, scheduler and bus run while the app does."""
    service = app[SERVICE_KEY]
    service.hub.bind(asyncio.get_running_loop())
    service.start()
    await service.restore()
    yield
    await service.stop()


async def webrtc_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: make WebRTC reachable on a host with no address but loopback (aiortc_compat)."""
    aiortc_compat.offer_loopback_when_offline()
    yield


def build_app(service: LiveService, explainer: Explainer | None = None) -> web.Application:
    """`explainer`: builds an alert's explanation (None: POST /api/alerts/<id>/explanation answers 503)."""
    app = web.Application(middlewares=[auth.middleware],
                          client_max_size=service.config.max_message_bytes * UPLOAD_LIMIT_FACTOR)
    app[SERVICE_KEY] = service
    app[baselines.BASELINES_KEY] = service.baselines
    app[auth.GUARD_KEY] = auth.Guard(service.config)
    app.cleanup_ctx.append(service_ctx)
    app.cleanup_ctx.append(malloc.trim_ctx)  # glibc's free pages back to the system once a minute
    if explainer is not None:
        app[EXPLAINER_KEY] = explainer
    app.cleanup_ctx.append(explain_ctx)
    rtc = WEBRTC_DISABLED is None
    config = service.config
    if rtc:
        cams, viewers = webcam.default_policy(), relay.default_policy()
        if config.max_webrtc_peers is not None:
            cams = dataclasses.replace(cams, max_peers=config.max_webrtc_peers)
        if config.max_relay_viewers is not None:
            viewers = dataclasses.replace(viewers, max_peers=config.max_relay_viewers)
        app[webcam.PEERS_KEY] = webcam.PeerRegistry(service, policy=cams)
        app[relay.RELAY_KEY] = relay.RelayHub(service, policy=viewers)
        app.cleanup_ctx.extend([webrtc_ctx, webcam.peers_ctx, relay.relay_ctx])
    else:
        log.warning("%s", WEBRTC_DISABLED)
    def peer_counts() -> dict[str, int]:
        return {"webcam": len(app[webcam.PEERS_KEY]), "relay": len(app[relay.RELAY_KEY].viewers)} if rtc else {}

    app[METRICS_KEY] = Metrics(service, peer_counts)
    service.on_removed(lambda source: app[METRICS_KEY].forget_stream(source.name))
    static = WEB_ROOT / "static"
    app.add_routes([
        web.get("/", index),
        web.get("/ws", ws_handler),
        web.get("/api/streams", list_streams),
        web.post("/api/streams", add_stream),
        web.delete("/api/streams/{name}", remove_stream),
        web.post("/api/streams/{name}/priority", priority_handler(SERVICE_KEY)),
        web.get("/api/streams/{name}/baseline", baselines.get_baseline),
        web.post("/api/streams/{name}/baseline", baselines.post_baseline),
        web.delete("/api/streams/{name}/baseline", baselines.delete_baseline),
        web.get("/api/model", model_info),
        web.get("/evidence/{id}/{file}", evidence),
        web.post("/api/alerts/{id}/explanation", explain_alert),
        web.get("/metrics", metrics),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.post("/offer", refuse_when_full(webcam.post_offer) if rtc else webrtc_disabled),
        web.delete("/offer/{peer}", webcam.delete_offer if rtc else webrtc_disabled),
        web.post("/relay/{stream}", relay.post_relay if rtc else webrtc_disabled),
        web.delete("/relay/peer/{peer}", relay.delete_relay if rtc else webrtc_disabled),
        *([web.static("/static/", static)] if static.is_dir() else []),
    ])
    return app
