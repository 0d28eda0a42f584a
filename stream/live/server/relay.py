"""Server -> browser video relay over WebRTC: the page watches a camera's video through the server, so the
overlay sits on exactly the video the server scored.

`POST /relay/{stream}` takes a browser's offer (one receive-only video transceiver, plus a data channel the page
names "dfstream-sync") and answers with a track that plays that stream. `DELETE /relay/peer/{peer}` hangs up.

**One decode, one encode, any number of viewers.** Nothing is decoded twice: the relay subscribes to the frames
the stream's source already decodes for the scheduler (`StreamSource.subscribe`), keeps only the newest, and
encodes it once
on its own thread (H.264 with libx264 when the browser offers it, else VP8), whatever the number of viewers.
Every viewer's track hands the same encoded packets to aiortc, which only packetises them (aiortc's
`RTCRtpSender` accepts pre-encoded `av.Packet`s). aiortc's `MediaRelay` was not used because it shares the
*source* track between peers, and each peer's sender would then run its own encoder. A viewer joins on a
keyframe (it asks the encoder for one), and a viewer that falls behind drops to the next keyframe instead of
growing a backlog, so a slow browser never slows the encoder, the source or another viewer.

**Timestamps the page can map back to the overlays.** An outgoing frame's RTP time is the scored frame's
presentation time (`Frame.time`, the overlay's `time`) at 90 kHz, plus an offset that only changes when the
source's clock jumps (a file that loops, a camera that reconnects), so RTP time always advances. aiortc adds a
random origin per sender; the relay learns it from the sender once the first frames are out and tells the page
over the data channel: `{"type": "sync", "epochs": [{"from": RTP, "base": RTP}, ...]}`. For a displayed frame
with RTP timestamp r (from `requestVideoFrameCallback`), the page takes the newest epoch with `from <= r` and gets
the scored frame's time as `(r - base) mod 2^32 / 90000` seconds, which it matches to the overlays' `time`.

A relay ends with its last viewer, or when its stream is removed (`LiveService.on_removed`). The peer lifecycle
(deadlines, capacity, shutdown) is `peers.PeerSet`, shared with the webcams; the aiortc internals the relay
needs are read through `aiortc_compat`.

This module connects browsers (`RelayHub`, the routes); `relay_media.py` holds each stream's `StreamRelay` and
each viewer's `ViewerTrack`, `relay_encoder.py` the encoder thread. A viewer's sync messages subscribe to its
track's origin (`ViewerTrack.on_origin`) and its relay's epochs (`StreamRelay.on_epoch`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc import sdp

from stream.live.server import peers
from stream.live.server.peers import OfferRefused, PeerPolicy, PeerSet
from stream.live.server.relay_encoder import CLOCK
from stream.live.server.relay_media import StreamRelay, ViewerTrack
from stream.live.server.service import LiveService
from stream.live.sources.live import StreamSource

log = logging.getLogger(__name__)

MAX_VIEWERS = 16
NEGOTIATION_TIMEOUT_S = peers.NEGOTIATION_TIMEOUT_S
CONNECT_TIMEOUT_S = peers.CONNECT_TIMEOUT_S  # an answered viewer that never connects is closed
SYNC_CHANNEL = "dfstream-sync"
RELAY_HELP = 'send JSON {"sdp": "...", "type": "offer"} with one receive-only video transceiver'


@dataclass(eq=False)
class Viewer:
    """One browser watching one stream: its connection, its track and the sync data channel."""

    id: str
    stream: str
    pc: RTCPeerConnection
    track: ViewerTrack
    relay: StreamRelay
    channel: Any = None
    created: float = field(default_factory=time.monotonic)


def default_policy() -> PeerPolicy:
    return PeerPolicy(MAX_VIEWERS, "relay viewers", NEGOTIATION_TIMEOUT_S, CONNECT_TIMEOUT_S)


class RelayHub:
    """Every relayed stream and every viewer. Closing a viewer's peer, its stream, or the server closes it."""

    def __init__(self, service: LiveService, policy: PeerPolicy | None = None) -> None:
        self.service = service
        self.relays: dict[str, StreamRelay] = {}  # by stream name
        self._peers: PeerSet[Viewer] = PeerSet(policy or default_policy(), self._teardown)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._syncs: dict[str, tuple[Callable[[], None], ...]] = {}  # viewer id -> its sync subscriptions

    @property
    def viewers(self) -> dict[str, Viewer]:
        return self._peers.peers

    @property
    def max_viewers(self) -> int:
        return self._peers.policy.max_peers

    def refuse_if_full(self) -> None:
        self._peers.refuse_if_full()

    def start(self) -> None:
        """Learn of removed streams from the service (on the event loop that runs the server)."""
        self._loop = asyncio.get_running_loop()
        if self._unsubscribe is None:
            self._unsubscribe = self.service.on_removed(self._stream_removed)

    def _source(self, name: str) -> StreamSource | None:
        return next((s for s in self.service.scheduler.sources() if s.name == name), None)

    async def open(self, name: str, offer: RTCSessionDescription) -> tuple[Viewer, RTCSessionDescription]:
        source = self._source(name)
        if source is None:
            raise KeyError(name)
        loop = asyncio.get_running_loop()
        async with self._peers.opening() as pc:
            transceiver, codec = await self._peers.answer(pc, lambda pc: self._negotiate(pc, offer))
            relay = self.relays.get(name)
            if relay is None or relay.source is not source:
                if relay is not None:
                    self._drop_relay(relay)
                relay = StreamRelay(source, loop)
                self.relays[name] = relay
            track = ViewerTrack(relay, codec)
            transceiver.sender.replaceTrack(track)
            track.sender = transceiver.sender
            try:
                await pc.setLocalDescription(await pc.createAnswer())
            except BaseException:
                if not relay.viewers:
                    self._drop_relay(relay)
                raise
        viewer = Viewer(uuid.uuid4().hex, name, pc, track, relay)
        relay.add(track)
        self._syncs[viewer.id] = (track.on_origin(lambda _origin: self._send_sync(viewer)),
                                  relay.on_epoch(lambda _: self._send_sync(viewer)))

        @pc.on("datachannel")
        def on_channel(channel) -> None:
            if channel.label == SYNC_CHANNEL:
                viewer.channel = channel
                self._send_sync(viewer)

        self._peers.add(viewer)
        log.info("relay viewer %s watching %s (%s)", viewer.id, name, codec)
        return viewer, pc.localDescription

    @staticmethod
    async def _negotiate(pc: RTCPeerConnection, offer: RTCSessionDescription):
        """Send on the offer's first video section, in the best codec both sides have (H.264, else VP8);
        answer every other section inactive."""
        media = [m for m in sdp.SessionDescription.parse(offer.sdp).media if m.kind == "video"]
        if not media:
            raise OfferRefused("the offer has no video section to receive on")
        offered = {c.mimeType.lower() for c in media[0].rtp.codecs}
        codec = next((c for c in ("h264", "vp8") if f"video/{c}" in offered), None)
        if codec is None:
            raise OfferRefused("the browser offers neither H.264 nor VP8 video")
        # Created before the offer is applied so the codec preference filters the negotiation.
        video = pc.addTransceiver("video", direction="sendonly")
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType.lower() in (f"video/{codec}", "video/rtx")])
        await pc.setRemoteDescription(offer)
        for transceiver in pc.getTransceivers():
            if transceiver is not video:
                transceiver.direction = "inactive"
        if video.mid is None:
            raise OfferRefused("the offer has no video section to receive on")
        return video, codec

    def _send_sync(self, viewer: Viewer) -> None:
        channel, origin = viewer.channel, viewer.track.origin
        if channel is None or origin is None or channel.readyState != "open":
            return
        epochs = [{"from": (origin + start) % (1 << 32), "base": (origin + offset) % (1 << 32)}
                  for start, offset in viewer.relay.epochs]
        channel.send(json.dumps({"type": "sync", "stream": viewer.stream, "clock": CLOCK, "epochs": epochs}))

    def discard(self, viewer_id: str) -> bool:
        """Hang up one viewer; its relay ends with its last viewer. Idempotent; call on the loop."""
        return self._peers.discard(viewer_id)

    def _teardown(self, viewer: Viewer, reason: str | None) -> None:
        for unsubscribe in self._syncs.pop(viewer.id, ()):
            unsubscribe()
        viewer.track.stop()
        viewer.relay.remove(viewer.track)
        if not viewer.relay.viewers:
            self._drop_relay(viewer.relay)
        log.info("relay viewer %s closed (%s)%s", viewer.id, viewer.stream, f": {reason}" if reason else "")

    def _drop_relay(self, relay: StreamRelay) -> None:
        if relay.closed:
            return
        relay.closed = True
        for key, r in list(self.relays.items()):
            if r is relay:
                del self.relays[key]
        for viewer in [v for v in self.viewers.values() if v.relay is relay]:
            self.discard(viewer.id)
        relay.close()

    def _stream_removed(self, source: StreamSource) -> None:
        """LiveService.on_removed: close the viewers of a removed stream. Called wherever the removal ran;
        the relay's state is only touched on the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._drop_source(source)
        else:
            loop.call_soon_threadsafe(self._drop_source, source)

    def _drop_source(self, source: StreamSource) -> None:
        for relay in [r for r in self.relays.values() if r.source is source]:
            self._drop_relay(relay)

    async def close_all(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for relay in list(self.relays.values()):
            self._drop_relay(relay)
        await self._peers.close_all()

    def stats(self) -> dict[str, Any]:
        return {name: {"viewers": len(r.viewers),
                       "encoders": {c: {"encoded": e.encoded, "skipped": e.skipped} for c, e in r.encoders.items()}}
                for name, r in self.relays.items()}


RELAY_KEY = web.AppKey("relay", RelayHub)


async def relay_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: follow stream removals while the server runs; close every viewer at shutdown."""
    hub = app[RELAY_KEY]
    hub.start()
    yield
    await hub.close_all()


async def post_relay(request: web.Request) -> web.Response:
    """`POST /relay/{stream}`: answer a browser's receive-only offer with that stream's video. (auth.py has
    already refused other sites, other Hosts and non-JSON bodies.)"""
    hub = request.app[RELAY_KEY]
    offer, _ = await peers.read_offer(request, RELAY_HELP)
    hub.refuse_if_full()
    name = request.match_info["stream"]
    try:
        viewer, answer = await hub.open(name, offer)
    except KeyError:
        raise web.HTTPNotFound(text=f"no stream named {name!r}") from None
    except (OfferRefused, asyncio.TimeoutError) as exc:
        raise peers.negotiation_refused(exc) from None
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "stream": name, "peer": viewer.id,
                              "codec": viewer.track.codec})


async def delete_relay(request: web.Request) -> web.Response:
    """`DELETE /relay/peer/{peer}`: hang up one viewer."""
    peer = request.match_info["peer"]
    if not request.app[RELAY_KEY].discard(peer):
        raise web.HTTPNotFound(text="no such relay viewer")
    return web.json_response({"closed": peer})
