"""Browser webcams over WebRTC (aiortc): offer/answer signalling on the serve app, one peer per stream.

`POST /offer` takes the browser's SDP offer, answers it and adds a `WebRTCSource` to the service; `DELETE
/offer/{peer}` hangs up. Every peer lives in a `PeerRegistry`, which closes it when its connection fails or
closes, when it never connects, when its stream is removed through the API, and at shutdown, so no peer outlives
its stream or the other way round.

The source side of a peer (its video track) is `stream.live.sources.webrtc.WebRTCSource`.

SDP carries ICE passwords and DTLS fingerprints, so it is never logged here. (aiortc's own loggers print it at
DEBUG level: leave `aiortc` at INFO or above where logs are kept.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated

from aiohttp import web
from aiortc import (MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection,
                    RTCSessionDescription)
from pydantic import TypeAdapter, ValidationError

from stream.config.serve import source_name_for
from stream.messages import Status
from stream.live.server.app import _origin_ok
from stream.live.server.service import LiveService
from stream.live.sources.live import SourceConfig
from stream.live.sources.webrtc import WebRTCSource

log = logging.getLogger(__name__)

# No STUN/TURN: browser and server on one host or LAN. A WAN deployment adds e.g.
# RTCIceServer("stun:stun.example.org:3478") here. (aiortc falls back to Google's STUN server when given None,
# which this list, always passed, prevents: offline hosts would otherwise wait on a server they cannot reach.)
ICE_SERVERS: tuple[RTCIceServer, ...] = ()
MAX_PEERS = 8  # browsers at once; each costs a decoder thread and RGB conversions
NEGOTIATION_TIMEOUT_S = 15.0  # setRemoteDescription + answer + ICE gathering
CONNECT_TIMEOUT_S = 30.0  # a peer that is answered but never connects (the browser left) is closed
DISCONNECT_GRACE_S = 10.0  # how long a "disconnected" peer may come back before it is closed
STREAM_NAME = TypeAdapter(Annotated[str, SourceConfig.model_fields["name"]])  # the same rules as config names
DEFAULT_NAME = "webrtc"
OFFER_HELP = 'send JSON {"sdp": "...", "type": "offer", "name": "optional stream name"}'


class OfferRefused(ValueError):
    """The offer cannot be answered (garbage SDP, no video track). The message is for the user."""


class NameTaken(ValueError):
    """Another stream already has the requested name."""


@dataclass(eq=False)
class Peer:
    """One browser: its connection, its stream, and the timer that closes it if it never (re)connects."""

    id: str
    pc: RTCPeerConnection
    source: WebRTCSource
    timer: asyncio.TimerHandle | None = None


class PeerRegistry:
    """Every open peer connection by id. A peer and its stream go together: closing either closes both."""

    def __init__(self, service: LiveService, ice_servers: tuple[RTCIceServer, ...] = ICE_SERVERS,
                 max_peers: int = MAX_PEERS) -> None:
        self.service = service
        self.ice_servers = ice_servers
        self.max_peers = max_peers
        self.peers: dict[str, Peer] = {}
        self._closing: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self.peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self.peers

    async def open(self, offer: RTCSessionDescription, name: str) -> tuple[Peer, RTCSessionDescription]:
        """Answer `offer` and start its stream. Only a fully answered peer is registered, so a refused offer
        leaves nothing behind."""
        if name in self.service.names():
            raise NameTaken(f"a stream named {name!r} already exists")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=list(self.ice_servers)))
        peer_id = uuid.uuid4().hex
        try:
            try:
                track = await asyncio.wait_for(self._negotiate(pc, offer), NEGOTIATION_TIMEOUT_S)
            except (OfferRefused, asyncio.TimeoutError):
                raise
            except Exception as exc:  # aiortc raises ValueError, KeyError, OperationError... on bad SDP
                raise OfferRefused(f"the SDP offer was refused: {exc or type(exc).__name__}") from exc
            source = WebRTCSource(name, peer_id, track, on_stop=self.discard)
            try:
                self.service.add_source(source)
            except ValueError as exc:  # the name was taken while we negotiated
                raise NameTaken(str(exc)) from None
        except BaseException:
            await pc.close()
            raise
        peer = Peer(peer_id, pc, source)
        self.peers[peer_id] = peer
        pc.on("connectionstatechange", lambda: self._state_changed(peer))
        peer.timer = asyncio.get_running_loop().call_later(CONNECT_TIMEOUT_S, self._give_up, peer,
                                                           "the browser never connected")
        log.info("webrtc peer %s opened stream %s", peer_id, name)
        return peer, pc.localDescription

    @staticmethod
    async def _negotiate(pc: RTCPeerConnection, offer: RTCSessionDescription) -> MediaStreamTrack:
        """Receive the first video track; answer every other media section inactive, because aiortc would
        decode and queue it without bound while nobody reads it."""
        await pc.setRemoteDescription(offer)
        video = None
        for transceiver in pc.getTransceivers():
            track = transceiver.receiver.track
            if video is None and transceiver.kind == "video" and track is not None:
                video = track
            else:
                transceiver.direction = "inactive"
        if video is None:
            raise OfferRefused("the offer has no video track to send")
        await pc.setLocalDescription(await pc.createAnswer())  # aiortc gathers ICE candidates in here
        return video

    def _state_changed(self, peer: Peer) -> None:
        state = peer.pc.connectionState
        if state == "connected" and peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None
        elif state in ("failed", "closed"):
            self._give_up(peer, "peer connection failed" if state == "failed" else None)
        elif state == "disconnected" and peer.timer is None:  # browsers report it; aiortc may in future
            peer.timer = asyncio.get_running_loop().call_later(DISCONNECT_GRACE_S, self._give_up, peer,
                                                               "peer disconnected")

    def _give_up(self, peer: Peer, error: str | None) -> None:
        """Close a peer that hung up (error None) or failed; a failure is published as the stream's last status."""
        if peer.id not in self.peers:
            return
        if error is not None:
            peer.source.fail(error)
            self.service.publish(Status(peer.source.name, source=peer.source.source_status()).to_message())
        self.discard(peer.id)

    def discard(self, peer_id: str) -> bool:
        """Unregister a peer, remove its stream and start closing its connection. Idempotent; call on the loop."""
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
        if peer.timer is not None:
            peer.timer.cancel()
        if any(s is peer.source for s in self.service.scheduler.sources()):  # not a newer stream of that name
            self.service.remove(peer.source.name)
        task = asyncio.ensure_future(peer.pc.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        log.info("webrtc peer %s closed (stream %s)", peer_id, peer.source.name)
        return True

    async def close(self, peer_id: str) -> bool:
        found = self.discard(peer_id)
        await self.wait_closed()
        return found

    async def close_all(self) -> None:
        for peer_id in list(self.peers):
            self.discard(peer_id)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)


REGISTRY_KEY = web.AppKey("webrtc_peers", PeerRegistry)


def setup(app: web.Application, service: LiveService) -> PeerRegistry:
    """Add the signalling routes to the serve app and close every peer at shutdown."""
    registry = PeerRegistry(service)
    app[REGISTRY_KEY] = registry
    service.extra_cleanups.append(registry.close_all)

    async def post_offer(request: web.Request) -> web.Response:
        if not _origin_ok(request, service):  # another site must not open streams through the user's browser
            raise web.HTTPForbidden(text="Origin not allowed")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text=f"malformed JSON: {OFFER_HELP}") from None
        if not isinstance(body, dict) or not isinstance(body.get("sdp"), str) or body.get("type") != "offer":
            raise web.HTTPBadRequest(text=OFFER_HELP)
        name = body.get("name")
        if name is not None:
            try:
                STREAM_NAME.validate_python(name)
            except ValidationError as exc:
                raise web.HTTPBadRequest(text=f"name: {exc.errors()[0]['msg']}") from None
        if len(registry) >= registry.max_peers:
            raise web.HTTPServiceUnavailable(text=f"already {registry.max_peers} WebRTC peers; close one first")
        name = name or source_name_for(DEFAULT_NAME, service.names())
        try:
            peer, answer = await registry.open(RTCSessionDescription(sdp=body["sdp"], type="offer"), name)
        except OfferRefused as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        except NameTaken as exc:
            raise web.HTTPConflict(text=str(exc)) from None
        except asyncio.TimeoutError:
            raise web.HTTPGatewayTimeout(text="could not answer the offer in time (ICE gathering)") from None
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "stream": name, "peer": peer.id})

    async def delete_offer(request: web.Request) -> web.Response:
        peer_id = request.match_info["peer"]
        if not await registry.close(peer_id):
            raise web.HTTPNotFound(text="no such peer")
        return web.json_response({"closed": peer_id})

    app.router.add_post("/offer", post_offer)
    app.router.add_delete("/offer/{peer}", delete_offer)
    return registry
