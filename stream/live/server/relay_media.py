"""The relay's media side: one `StreamRelay` per relayed stream (its subscription to the source's frames, its RTP
timeline and one shared encoder per codec) and one `ViewerTrack` per viewer (the shared packets, from a keyframe,
as aiortc sends them). `relay.py` connects them to browsers."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable

import av
from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc.mediastreams import MediaStreamError

from stream.live.listeners import Listeners
from stream.live.server import aiortc_compat
from stream.live.server.relay_encoder import CLOCK, RelayEncoder
from stream.live.sources import Frame
from stream.live.sources.live import StreamSource


VIEWER_BACKLOG = 30  # encoded frames a viewer may lag behind before it skips to the next keyframe
MAX_JUMP_S = 5.0  # a source clock jump larger than this (or backwards) starts a new timestamp epoch
EPOCHS_KEPT = 4


class ViewerTrack(MediaStreamTrack):
    """One viewer's video track: the shared encoded packets, starting at a keyframe."""

    kind = "video"

    def __init__(self, relay: "StreamRelay", codec: str) -> None:
        super().__init__()
        self.relay = relay
        self.codec = codec
        self.sender: RTCRtpSender | None = None
        self.origin: int | None = None  # aiortc's random RTP timestamp origin for this viewer's sender
        self._origin_known: Listeners[int] = Listeners("relay origin")
        self._queue: deque[av.Packet] = deque()
        self._ready = asyncio.Event()
        self._need_key = True
        self._last_pts: int | None = None
        self.skipped = 0

    def on_origin(self, fn: Callable[[int], None]) -> Callable[[], None]:
        """Call `fn(origin)` on the event loop once this viewer's RTP origin is known; returns the unsubscriber."""
        return self._origin_known.subscribe(fn)

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
            self._origin_known.notify(self.origin)

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
        self.encoders: dict[str, RelayEncoder] = {}
        self._epochs: deque[tuple[int, int]] = deque(maxlen=EPOCHS_KEPT)  # (first rtp time, offset)
        self._epochs_lock = threading.Lock()  # appended on the source's thread, read on the loop
        self._epoch_started: Listeners[None] = Listeners("relay epoch")
        self._loop = loop
        self._offset: int | None = None
        self._last: int | None = None
        self.closed = False
        self._unsubscribe = source.subscribe(self._tap)
        self._unwatch = source.watch()  # a relay exists while the stream has viewers: under load it keeps its rate

    def on_epoch(self, fn: Callable[[None], None]) -> Callable[[], None]:
        """Call `fn(None)` on the event loop whenever a new timestamp epoch starts; returns the unsubscriber."""
        return self._epoch_started.subscribe(fn)

    def _tap(self, frame: Frame) -> None:
        """On the source's decoding thread, for every frame: stamp it and hand it to the encoders (cheap)."""
        rtp = self.rtp_time(frame)
        for encoder in list(self.encoders.values()):
            encoder.offer(frame, rtp)

    def rtp_time(self, frame: Frame) -> int:
        """Frame.time at 90 kHz plus the current epoch's offset; a new epoch whenever the source clock jumps.
        Called on the source's decoding thread (one per source), for every frame."""
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
        if self._epoch_started:
            self._loop.call_soon_threadsafe(self._epoch_started.notify, None)
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
            self.encoders[viewer.codec] = RelayEncoder(
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
        self._unwatch()
        for encoder in self.encoders.values():
            encoder.stop()
        self.encoders.clear()
        for viewer in list(self.viewers):
            viewer.stop()
