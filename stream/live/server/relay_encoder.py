"""The relay's encoder: the newest decoded frame of a stream, encoded once (H.264 with libx264, else VP8) on its
own thread for every viewer, with RTP-clocked timestamps and keyframes on request. It encodes from the decoded
planes (`Picture.for_encoder`: scaled in YUV), so relaying a stream converts none of its frames to RGB."""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
import time
from collections.abc import Callable

import av

from stream.live.sources import Frame
from stream.live.sources.picture import Picture

log = logging.getLogger(__name__)

CLOCK = 90_000  # RTP video clock (Hz)
TIME_BASE = fractions.Fraction(1, CLOCK)
MAX_WIDTH = 960  # relayed video is scaled down to at most this width (CPU and bandwidth; boxes scale with it)
KEYFRAME_INTERVAL_S = 2.0  # a viewer that joins or loses packets waits at most this for a keyframe anyway
BITRATE = 1_500_000

Deliver = Callable[[av.Packet, bool], None]  # (packet, keyframe), called on the event loop


class RelayEncoder:
    """Encodes the newest tapped frame of one stream, once, for every viewer of one codec.

    Owns one thread ("relay-STREAM-CODEC"), started here and ended by `stop()`: it waits on its own Condition for
    the newest frame (`offer`, from the source's decoder thread; an older frame not yet taken is replaced and
    counted in `skipped`), encodes it, and hands each packet to `deliver(packet, keyframe)` on the event loop."""

    def __init__(self, name: str, codec: str, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
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
                packets = self._encode(frame.picture, rtp)
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

    def _encode(self, picture: Picture, rtp: int) -> list[av.Packet]:
        w, h = picture.size
        scale = min(1.0, MAX_WIDTH / w)
        size = (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2)
        if self._ctx is None or size != self._size:
            self._ctx, self._size, self._want_key = self._open(*size), size, True
        frame = picture.for_encoder(*size)  # from the decoded planes: a relayed frame is never made RGB
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
