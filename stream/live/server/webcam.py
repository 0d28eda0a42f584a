"""Browser webcams and shared screens over WebRTC (aiortc): offer/answer signalling on the serve app, one peer
per stream.

`POST /offer` takes the browser's SDP offer, answers it and adds a `WebRTCSource` to the service; `DELETE
/offer/{peer}` hangs up. A peer and its stream go together: the peer is closed when its connection fails or
closes, when it never connects, when its stream is removed through the API, and at shutdown (the shared
lifecycle is `peers.PeerSet`), so no peer outlives its stream or the other way round.

An offer's `kind` says what the browser sends: `webcam` (getUserMedia) or `screen` (getDisplayMedia: a screen,
window or tab, usually a call). A screen's stream is searched for faces with the `SCREEN` detection profile. The
first video track is the stream; the first audio track, if the browser sends one (a shared tab's sound), is
received and kept on the source for the voice path; every other media section is answered inactive.

The source side of a peer (its tracks) is `stream.live.sources.webrtc.WebRTCSource`. While a peer is open,
a small task reads its receiver's stats every `BITRATE_EVERY_S` and sets the source's received bitrate, which
the stream's status and every face's quality carry (`WebRTCSource.link_quality()`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from aiohttp import web
from aiortc import RTCIceServer, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription, RTCStatsReport
from pydantic import TypeAdapter, ValidationError

from stream.config.faces import CAMERA, SCREEN, DetectionProfile
from stream.config.serve import source_name_for
from stream.live.server import peers
from stream.live.server.peers import OfferRefused, PeerPolicy, PeerSet
from stream.live.server.service import LiveService
from stream.live.sources.live import SourceConfig
from stream.live.sources.webrtc import WebRTCSource

log = logging.getLogger(__name__)

ICE_SERVERS: tuple[RTCIceServer, ...] = peers.ICE_SERVERS
MAX_PEERS = 8  # browsers at once; each costs a decoder thread and RGB conversions
NEGOTIATION_TIMEOUT_S = peers.NEGOTIATION_TIMEOUT_S
CONNECT_TIMEOUT_S = peers.CONNECT_TIMEOUT_S
DISCONNECT_GRACE_S = peers.DISCONNECT_GRACE_S
STREAM_NAME = TypeAdapter(Annotated[str, SourceConfig.model_fields["name"]])  # the same rules as config names
DEFAULT_NAME = "webrtc"
# What an offer may send, its detection profile and the stream's default name.
KINDS: dict[str, tuple[DetectionProfile, str]] = {"webcam": (CAMERA, DEFAULT_NAME), "screen": (SCREEN, "screen")}
OFFER_HELP = ('send JSON {"sdp": "...", "type": "offer", "name": "optional stream name", '
              '"kind": "webcam (default) or screen"}')
BITRATE_EVERY_S = 1.0  # how often each peer's received bitrate is measured


class NameTaken(ValueError):
    """Another stream already has the requested name."""


@dataclass(eq=False)
class Peer:
    """One browser: its connection and its stream."""

    id: str
    pc: RTCPeerConnection
    source: WebRTCSource
    stats: asyncio.Task | None = None  # measures the received bitrate while the peer is open


def received_bytes(report: RTCStatsReport) -> int | None:
    """The bytes received so far on a video receiver, from its `getStats()` report. The inbound RTP stats'
    `bytesReceived` where aiortc gives it; aiortc 1.16 does not, so else the transport's: a peer's transport
    carries its one video track and, where the browser sends sound, its one audio track (Opus, tens of kbit/s
    next to the video's megabits; every other media section is answered inactive)."""
    by_type: dict[str, int] = {}
    for stats in report.values():
        n = getattr(stats, "bytesReceived", None)
        if isinstance(n, int) and stats.type in ("inbound-rtp", "transport"):
            by_type[stats.type] = by_type.get(stats.type, 0) + n
    return by_type.get("inbound-rtp", by_type.get("transport"))


async def measure_bitrate(receiver: RTCRtpReceiver, source: WebRTCSource, every_s: float = BITRATE_EVERY_S) -> None:
    """Set `source.bitrate_kbps` from the receiver's byte count every `every_s`, until cancelled."""
    last: tuple[int, float] | None = None
    while True:
        await asyncio.sleep(every_s)
        try:
            got = received_bytes(await receiver.getStats())
        except Exception:  # the transport is going away: the peer's teardown cancels this task
            log.debug("%s: receiver stats unavailable", source.name, exc_info=True)
            continue
        now = time.monotonic()
        if got is None:
            continue
        if last is not None and now > last[1] and got >= last[0]:
            source.bitrate_kbps = round((got - last[0]) * 8 / 1000 / (now - last[1]), 1)
        last = (got, now)


def default_policy() -> PeerPolicy:
    """The webcam policy from this module's constants, read when a registry is made (tests shorten them)."""
    return PeerPolicy(MAX_PEERS, "WebRTC peers", NEGOTIATION_TIMEOUT_S, CONNECT_TIMEOUT_S, DISCONNECT_GRACE_S)


class PeerRegistry:
    """Every browser webcam peer by id. A peer and its stream go together: closing either closes both."""

    def __init__(self, service: LiveService, ice_servers: tuple[RTCIceServer, ...] = ICE_SERVERS,
                 policy: PeerPolicy | None = None) -> None:
        self.service = service
        self._peers: PeerSet[Peer] = PeerSet(policy or default_policy(), self._teardown, ice_servers)

    @property
    def peers(self) -> dict[str, Peer]:
        return self._peers.peers

    @property
    def max_peers(self) -> int:
        return self._peers.policy.max_peers

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def refuse_if_full(self) -> None:
        self._peers.refuse_if_full()

    async def open(self, offer: RTCSessionDescription, name: str,
                   detection: DetectionProfile = CAMERA) -> tuple[Peer, RTCSessionDescription]:
        """Answer `offer` and start its stream. Only a fully answered peer is registered, so a refused offer
        leaves nothing behind."""
        if name in self.service.names():
            raise NameTaken(f"a stream named {name!r} already exists")
        peer_id = uuid.uuid4().hex
        async with self._peers.opening() as pc:
            receiver, audio = await self._peers.answer(pc, lambda pc: self._negotiate(pc, offer))
            source = WebRTCSource(name, peer_id, receiver.track, on_stop=self.discard,
                                  audio=audio.track if audio is not None else None, detection=detection)
            try:
                self.service.add_source(source)
            except ValueError as exc:  # the name was taken while we negotiated
                raise NameTaken(str(exc)) from None
        peer = Peer(peer_id, pc, source)
        self._peers.add(peer)
        peer.stats = asyncio.create_task(measure_bitrate(receiver, source), name=f"webrtc-bitrate-{name}")
        log.info("webrtc peer %s opened stream %s", peer_id, name)
        return peer, pc.localDescription

    @staticmethod
    async def _negotiate(pc: RTCPeerConnection, offer: RTCSessionDescription
                         ) -> tuple[RTCRtpReceiver, RTCRtpReceiver | None]:
        """Receive the first video track and the first audio track, if any (returns their receivers; the
        source drains the audio); answer every other media section inactive, because aiortc would decode and
        queue it without bound while nobody reads it."""
        await pc.setRemoteDescription(offer)
        kept: dict[str, RTCRtpReceiver] = {}
        for transceiver in pc.getTransceivers():
            if transceiver.kind in ("video", "audio") and transceiver.kind not in kept \
                    and transceiver.receiver.track is not None:
                kept[transceiver.kind] = transceiver.receiver
                transceiver.direction = "recvonly"
            else:
                transceiver.direction = "inactive"
        if "video" not in kept:
            raise OfferRefused("the offer has no video track to send")
        await pc.setLocalDescription(await pc.createAnswer())  # aiortc gathers ICE candidates in here
        return kept["video"], kept.get("audio")

    def _teardown(self, peer: Peer, error: str | None) -> None:
        """A peer went: a failure becomes its stream's last status (pushed by the source's state change), then
        the stream is removed."""
        if peer.stats is not None:
            peer.stats.cancel()
        if error is not None:
            peer.source.fail(error)
        if any(s is peer.source for s in self.service.scheduler.sources()):  # not a newer stream of that name
            self.service.remove(peer.source.name)
        log.info("webrtc peer %s closed (stream %s)", peer.id, peer.source.name)

    def discard(self, peer_id: str) -> bool:
        """Unregister a peer, remove its stream and start closing its connection. Idempotent; call on the loop."""
        return self._peers.discard(peer_id)

    async def close(self, peer_id: str) -> bool:
        return await self._peers.close(peer_id)

    async def close_all(self) -> None:
        await self._peers.close_all()

    async def wait_closed(self) -> None:
        await self._peers.wait_closed()


PEERS_KEY = REGISTRY_KEY = web.AppKey("webrtc_peers", PeerRegistry)


async def peers_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: close every webcam peer (and so its stream) at shutdown."""
    yield
    await app[PEERS_KEY].close_all()


async def post_offer(request: web.Request) -> web.Response:
    """`POST /offer`: answer a browser's webcam or screen offer and start its stream. (auth.py has already refused
    other sites, other Hosts and non-JSON bodies.)"""
    registry = request.app[PEERS_KEY]
    offer, body = await peers.read_offer(request, OFFER_HELP)
    name, kind = body.get("name"), body.get("kind", "webcam")
    if name is not None:
        try:
            STREAM_NAME.validate_python(name)
        except ValidationError as exc:
            raise web.HTTPBadRequest(text=f"name: {exc.errors()[0]['msg']}") from None
    if not isinstance(kind, str) or kind not in KINDS:
        raise web.HTTPBadRequest(text=f"kind: one of {', '.join(KINDS)}")
    detection, default_name = KINDS[kind]
    registry.refuse_if_full()
    name = name or source_name_for(default_name, registry.service.names())
    try:
        peer, answer = await registry.open(offer, name, detection)
    except (OfferRefused, asyncio.TimeoutError) as exc:
        raise peers.negotiation_refused(exc) from None
    except NameTaken as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "stream": name, "peer": peer.id})


async def delete_offer(request: web.Request) -> web.Response:
    """`DELETE /offer/{peer}`: hang up a webcam and remove its stream."""
    peer_id = request.match_info["peer"]
    if not await request.app[PEERS_KEY].close(peer_id):
        raise web.HTTPNotFound(text="no such peer")
    return web.json_response({"closed": peer_id})
