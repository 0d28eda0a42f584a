"""Packets for sources that have none of their own (browser webcams, codecs other than H.264/HEVC): their
decoded frames are encoded cheaply on a worker thread and fed to the recording ring like a camera's packets.

Policy: H.264 `ultrafast`/`zerolatency` at the first received size, a keyframe every `GOP_S` seconds. Ultrafast
costs a few ms per 720p frame on one core, so recording never competes with inference; the short GOP bounds how
far before the pre-roll a recording may have to start. Frames of another size (WebRTC adapts resolution) are
scaled to the first size, so one stream stays one continuous recording. When the worker falls behind, frames are
dropped at a bounded queue (counted), never queued without limit.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from fractions import Fraction

import av

from stream.live.sources import CodecInfo, Frame, Packet

log = logging.getLogger(__name__)

CODEC = "libx264"
PRESET = "ultrafast"
GOP_S = 1.0
NOMINAL_FPS = 30  # the encoder's rate hint; real timestamps come from the frames
TIME_BASE = Fraction(1, 90000)  # RTP's video clock: exact for any frame rate
QUEUE_FRAMES = 8  # frames waiting for the encoder before new ones are dropped


class FrameEncoder:
    def __init__(self, name: str, on_packet: Callable[[Packet], None]) -> None:
        self.name = name
        self.on_packet = on_packet
        self.dropped = 0
        self._queue: queue.Queue[Frame | None] = queue.Queue(QUEUE_FRAMES)
        self._thread = threading.Thread(target=self._run, name=f"encode-{name}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Frames waiting for the encoder now (more than QUEUE_FRAMES are dropped, counted in `dropped`)."""
        return self._queue.qsize()

    def submit(self, frame: Frame) -> None:
        """Called on the source's thread: hand the frame on, never wait."""
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def _run(self) -> None:
        ctx: av.VideoCodecContext | None = None
        info: CodecInfo | None = None
        last_pts = -1
        while (frame := self._queue.get()) is not None:
            try:
                if ctx is None:
                    w, h = frame.size[0] & ~1, frame.size[1] & ~1
                    ctx = av.CodecContext.create(CODEC, "w")
                    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
                    ctx.time_base, ctx.framerate = TIME_BASE, Fraction(NOMINAL_FPS)
                    ctx.options = {"preset": PRESET, "tune": "zerolatency",
                                   "x264-params": f"keyint={int(GOP_S * NOMINAL_FPS)}:scenecut=0"}
                    info = CodecInfo("h264", w, h, None, TIME_BASE)
                pts = max(int(round(frame.time / TIME_BASE)), last_pts + 1)  # strictly rising
                last_pts = pts
                vf = frame.picture.for_encoder(ctx.width, ctx.height)  # from the decoded planes: no RGB
                vf.pts, vf.time_base = pts, TIME_BASE
                for p in ctx.encode(vf):
                    self.on_packet(Packet(bytes(p), p.pts, p.dts, int(p.duration or 0), bool(p.is_keyframe), info))
            except Exception:
                log.exception("%s: encoding a frame for the recording failed", self.name)
