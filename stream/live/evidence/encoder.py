"""Packets for sources that have none of their own (browser webcams, codecs other than H.264/HEVC): their
decoded frames are encoded cheaply on a worker thread and fed to the recording ring like a camera's packets.

Policy: H.264 `ultrafast`/`zerolatency` at the first received size, a keyframe every `GOP_S` seconds. Ultrafast
costs a few ms per 720p frame on one core, so recording never competes with inference; the short GOP bounds how
far before the pre-roll a recording may have to start. Frames of another size (WebRTC adapts resolution) are
scaled to the first size, so one stream stays one continuous recording. When the worker falls behind, frames are
dropped at a bounded queue (counted), never queued without limit.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import av

from stream.live.evidence.dropping import DroppingWorker
from stream.live.sources import CodecInfo, Frame, Packet

CODEC = "libx264"
PRESET = "ultrafast"
GOP_S = 1.0
NOMINAL_FPS = 30  # the encoder's rate hint; real timestamps come from the frames
TIME_BASE = Fraction(1, 90000)  # RTP's video clock: exact for any frame rate
QUEUE_FRAMES = 8  # frames waiting for the encoder before new ones are dropped


class FrameEncoder(DroppingWorker[Frame]):
    WHAT = "encoding a frame for the recording"

    def __init__(self, name: str, on_packet: Callable[[Packet], None]) -> None:
        self.on_packet = on_packet
        self._ctx: av.VideoCodecContext | None = None
        self._info: CodecInfo | None = None
        self._last_pts = -1
        super().__init__(name, f"encode-{name}", QUEUE_FRAMES)

    def _handle(self, frame: Frame) -> None:
        if self._ctx is None:
            w, h = frame.size[0] & ~1, frame.size[1] & ~1
            ctx = av.CodecContext.create(CODEC, "w")
            ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
            ctx.time_base, ctx.framerate = TIME_BASE, Fraction(NOMINAL_FPS)
            ctx.options = {"preset": PRESET, "tune": "zerolatency",
                           "x264-params": f"keyint={int(GOP_S * NOMINAL_FPS)}:scenecut=0"}
            self._ctx, self._info = ctx, CodecInfo("h264", w, h, None, TIME_BASE)
        ctx = self._ctx
        pts = max(int(round(frame.time / TIME_BASE)), self._last_pts + 1)  # strictly rising
        self._last_pts = pts
        vf = frame.picture.for_encoder(ctx.width, ctx.height)  # from the decoded planes: no RGB
        vf.pts, vf.time_base = pts, TIME_BASE
        for p in ctx.encode(vf):
            self.on_packet(Packet(bytes(p), p.pts, p.dts, int(p.duration or 0), bool(p.is_keyframe), self._info))
