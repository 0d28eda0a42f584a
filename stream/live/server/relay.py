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
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc import sdp
from aiortc.mediastreams import MediaStreamError

from stream.live.server import aiortc_compat, peers
from stream.live.server.peers import OfferRefused, PeerPolicy, PeerSet
from stream.live.server.service import LiveService
from stream.live.sources.live import StreamSource
from stream.live.sources import Frame

log = logging.getLogger(__name__)

CLOCK = 90_000  # RTP video clock (Hz)
TIME_BASE = fractions.Fraction(1, CLOCK)
MAX_WIDTH = 960  # relayed video is scaled down to at most this width (CPU and bandwidth; boxes scale with it)
KEYFRAME_INTERVAL_S = 2.0  # a viewer that joins or loses packets waits at most this for a keyframe anyway
BITRATE = 1_500_000
MAX_VIEWERS = 16
VIEWER_BACKLOG = 30  # encoded frames a viewer may lag behind before it skips to the next keyframe
NEGOTIATION_TIMEOUT_S = peers.NEGOTIATION_TIMEOUT_S
CONNECT_TIMEOUT_S = peers.CONNECT_TIMEOUT_S  # an answered viewer that never connects is closed
MAX_JUMP_S = 5.0  # a source clock jump larger than this (or backwards) starts a new timestamp epoch
EPOCHS_KEPT = 4
SYNC_CHANNEL = "dfstream-sync"
RELAY_HELP = 'send JSON {"sdp": "...", "type": "offer"} with one receive-only video transceiver'


RelayRefused = OfferRefused  # the offer cannot be answered; the message is for the user


class _Encoder:
    """Encodes the newest tapped frame of one stream, once, for every viewer. Runs on its own thread."""

    def __init__(self, name: str, codec: str, loop: asyncio.AbstractEventLoop, deliver) -> None:
        self.name = name
        self.codec = codec  # "h264" | "vp8"
        self._loop = loop
        self._deliver = deliver  # called on the loop with (packet, keyframe)
        self._cond = threading.Condition()
        self._latest: tuple[Frame, int] | None = None
        self._stop = False
        self._want_key = True
        self._ctx: av.CodecContext | None = None
        self._size: tuple[int, int] | None = None
        self._last_key = 0.0
        self.encoded = 0
        self.skipped = 0  # tapped frames replaced before the encoder took them
        self._thread = threading.Thread(target=self._run, name=f"relay-{name}-{codec}", daemon=True)
        self._thread.start()

    def offer(self, frame: Frame, rtp: int) -> None:
        """Called from the source's thread for each decoded frame: cheap, never blocks on encoding."""
        with self._cond:
            if self._latest is not None:
                self.skipped += 1
            self._latest = (frame, rtp)
            self._cond.notify()

    def keyframe(self) -> None:
        self._want_key = True

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._latest is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                (frame, rtp), self._latest = self._latest, None
            try:
                packets = self._encode(frame.image, rtp)
            except Exception:  # a bad frame must not kill the relay
                log.exception("relay %s: encoding failed", self.name)
                self._ctx = None
                continue
            try:
                for packet in packets:
                    self._loop.call_soon_threadsafe(self._deliver, packet, bool(packet.is_keyframe))
            except RuntimeError:  # the event loop closed: the server is shutting down
                return

    def _open(self, width: int, height: int) -> av.CodecContext:
        if self.codec == "h264":
            ctx = av.CodecContext.create("libx264", "w")
            ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "level": "31",
                           "forced-idr": "1", "x264-params": "repeat-headers=1:scenecut=0"}
        else:
            ctx = av.CodecContext.create("libvpx", "w")
            ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "static-thresh": "1",
                           "undershoot-pct": "100", "overshoot-pct": "15"}
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = fractions.Fraction(30, 1)
        ctx.bit_rate = BITRATE
        ctx.gop_size = 10_000  # keyframes when asked for (joins, losses) and every KEYFRAME_INTERVAL_S
        ctx.thread_count = 1  # two shared cores: scoring matters more than encoder parallelism
        ctx.open()
        return ctx

    def _encode(self, image: np.ndarray, rtp: int) -> list[av.Packet]:
        h, w = image.shape[:2]
        scale = min(1.0, MAX_WIDTH / w)
        size = (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2)
        if self._ctx is None or size != self._size:
            self._ctx, self._size, self._want_key = self._open(*size), size, True
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame = frame.reformat(width=size[0], height=size[1], format="yuv420p")
        frame.pts, frame.time_base = rtp, TIME_BASE
        now = time.monotonic()
        if self._want_key or now - self._last_key >= KEYFRAME_INTERVAL_S:
            frame.pict_type = av.video.frame.PictureType.I
            self._want_key, self._last_key = False, now
        packets = list(self._ctx.encode(frame))
        for packet in packets:
            packet.pts, packet.dts, packet.time_base = rtp, rtp, TIME_BASE
        self.encoded += 1
        return packets


class ViewerTrack(MediaStreamTrack):
    """One viewer's video track: the shared encoded packets, starting at a keyframe."""

    kind = "video"

    def __init__(self, relay: "StreamRelay", codec: str) -> None:
        super().__init__()
        self.relay = relay
        self.codec = codec
        self.sender: RTCRtpSender | None = None
        self.origin: int | None = None  # aiortc's random RTP timestamp origin for this viewer's sender
        self.on_origin = None  # callback(origin) once it is known
        self._queue: deque[av.Packet] = deque()
        self._ready = asyncio.Event()
        self._need_key = True
        self._last_pts: int | None = None
        self.skipped = 0

    def push(self, packet: av.Packet, keyframe: bool) -> None:
        if self._need_key:
            if not keyframe:
                return
            self._need_key = False
        if len(self._queue) >= VIEWER_BACKLOG:  # the sender is stuck: start again at the next keyframe
            self.skipped += len(self._queue)
            self._queue.clear()
            self._need_key = True
            self.relay.keyframe(self.codec)
            return
        self._queue.append(packet)
        self._ready.set()

    async def recv(self) -> av.Packet:
        self._learn_origin()
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        self._check_keyframe_request()
        packet = self._queue.popleft()
        self._last_pts = packet.pts
        return packet

    def stop(self) -> None:
        super().stop()
        self._ready.set()

    def _learn_origin(self) -> None:
        """aiortc stamps RTP time as a random origin plus our pts and remembers the last one it sent. It asks
        for the next packet only after sending the previous one, so here sent == origin + the last pts."""
        if self.origin is not None or self._last_pts is None or self.sender is None:
            return
        sent = aiortc_compat.last_rtp_timestamp(self.sender)
        if sent is not None:
            self.origin = (sent - self._last_pts) % (1 << 32)
            if self.on_origin is not None:
                self.on_origin(self.origin)

    def _check_keyframe_request(self) -> None:
        """A browser that lost packets sends PLI/FIR; aiortc flags it for its own encoder, which is not used."""
        if self.sender is not None and aiortc_compat.take_keyframe_request(self.sender):
            self.relay.keyframe(self.codec)


class StreamRelay:
    """The subscription to one source, its RTP timeline, and one shared encoder per codec in use. Exists while
    the stream has viewers."""

    def __init__(self, source: StreamSource, loop: asyncio.AbstractEventLoop) -> None:
        self.source = source
        self.viewers: set[ViewerTrack] = set()
        self.encoders: dict[str, _Encoder] = {}
        self._epochs: deque[tuple[int, int]] = deque(maxlen=EPOCHS_KEPT)  # (first rtp time, offset)
        self._epochs_lock = threading.Lock()  # appended on the source's thread, read on the loop
        self.on_epoch = None  # callback() on the loop when a new epoch starts
        self._loop = loop
        self._offset: int | None = None
        self._last: int | None = None
        self.closed = False
        self._unsubscribe = source.subscribe(self._tap)

    def _tap(self, frame: Frame) -> None:
        """On the source's decoding thread, for every frame: stamp it and hand it to the encoders (cheap)."""
        rtp = self._rtp_time(frame)
        for encoder in list(self.encoders.values()):
            encoder.offer(frame, rtp)

    def _rtp_time(self, frame: Frame) -> int:
        """Frame.time at 90 kHz plus the current epoch's offset; a new epoch whenever the source clock jumps."""
        t = round(frame.time * CLOCK)
        if self._offset is not None and self._last is not None:
            rtp = t + self._offset
            if 0 < rtp - self._last <= MAX_JUMP_S * CLOCK:
                self._last = rtp
                return rtp
        self._offset = (0 if self._last is None else self._last + CLOCK // 30) - t
        rtp = t + self._offset
        self._last = rtp
        with self._epochs_lock:
            self._epochs.append((rtp, self._offset))
        if self.on_epoch is not None:
            self._loop.call_soon_threadsafe(self.on_epoch)
        return rtp

    @property
    def epochs(self) -> list[tuple[int, int]]:
        with self._epochs_lock:
            return list(self._epochs)

    def _distribute(self, codec: str, packet: av.Packet, keyframe: bool) -> None:
        for viewer in list(self.viewers):
            if viewer.codec == codec:
                viewer.push(packet, keyframe)

    def keyframe(self, codec: str) -> None:
        if codec in self.encoders:
            self.encoders[codec].keyframe()

    def add(self, viewer: ViewerTrack) -> None:
        if viewer.codec not in self.encoders:
            self.encoders[viewer.codec] = _Encoder(
                self.source.name, viewer.codec, self._loop,
                lambda packet, key, codec=viewer.codec: self._distribute(codec, packet, key))
        self.viewers.add(viewer)
        self.keyframe(viewer.codec)

    def remove(self, viewer: ViewerTrack) -> None:
        self.viewers.discard(viewer)
        if not any(v.codec == viewer.codec for v in self.viewers) and viewer.codec in self.encoders:
            self.encoders.pop(viewer.codec).stop()

    def close(self) -> None:
        """Unsubscribe from the source, stop the encoders and end every viewer's track. Idempotent."""
        self.closed = True
        self._unsubscribe()
        for encoder in self.encoders.values():
            encoder.stop()
        self.encoders.clear()
        for viewer in list(self.viewers):
            viewer.stop()


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
        track.on_origin = lambda _o, v=viewer: self._send_sync(v)
        relay.on_epoch = lambda r=relay: [self._send_sync(v) for v in self.viewers.values() if v.relay is r]

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
            raise RelayRefused("the offer has no video section to receive on")
        offered = {c.mimeType.lower() for c in media[0].rtp.codecs}
        codec = next((c for c in ("h264", "vp8") if f"video/{c}" in offered), None)
        if codec is None:
            raise RelayRefused("the browser offers neither H.264 nor VP8 video")
        # Created before the offer is applied so the codec preference filters the negotiation.
        video = pc.addTransceiver("video", direction="sendonly")
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType.lower() in (f"video/{codec}", "video/rtx")])
        await pc.setRemoteDescription(offer)
        for transceiver in pc.getTransceivers():
            if transceiver is not video:
                transceiver.direction = "inactive"
        if video.mid is None:
            raise RelayRefused("the offer has no video section to receive on")
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
