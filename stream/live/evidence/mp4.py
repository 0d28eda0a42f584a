"""MP4 writing with PyAV: remuxing a source's packets unchanged, and encoding frames (the face strip, burn-in).

Every file is written with `movflags=+faststart`: FFmpeg moves the index (moov) before the media data when the
file is closed, so a browser can start playing and seek before the whole file has arrived.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stream.live.evidence.audio_track import AudioTrack
from stream.live.sources import AudioCodecInfo, CodecInfo, Packet

FASTSTART = {"movflags": "+faststart"}
ENCODE_CODEC = "libx264"  # H.264 in MP4 plays in every browser
ENCODE_PIXEL_FORMAT = "yuv420p"


class RemuxWriter:
    """Writes one source's packets to a faststart MP4 as they come, timestamps shifted so the first packet (a
    keyframe) is at 0. No decoder or encoder is involved: the bitstream is the camera's own. With `audio`, the
    stream's sound goes beside it (`write_audio`, audio_track.py; FFmpeg's interleaving muxer orders the two).

    A recording can stop anywhere in decode order (the stream is removed, the server stops), and with B-frames a
    reference frame comes before the frames shown ahead of it: cut right after it and the clip ends on a hole
    (those frames never came) before a last frame. So packets are muxed a group at a time: a group starts at a
    packet shown later than any before it (a reference frame) and is complete once the next one starts, since the
    frames shown before a reference come right after it in decode order. At `close`, the last group is muxed only
    if it has no hole (its frames fill the time up to its last one), else dropped: a clip ends on its last whole
    group, at most a few frames early, never with a gap."""

    def __init__(self, path: Path, codec: CodecInfo, first: Packet, audio: AudioCodecInfo | None = None) -> None:
        if first.pts is None or not first.keyframe:
            raise ValueError("a recording starts at a keyframe with a timestamp")
        self.path = path
        self.codec = codec
        self.origin = first.pts if first.pts is not None else (first.dts or 0)
        self.start_time = first.time  # the source time of the clip's 0
        self.packets = 0
        self.last_time = first.time
        self.dropped_at_end = 0  # frames of an incomplete last group left out at close
        self._out = av.open(str(path), "w", format="mp4", options=FASTSTART)
        self._stream = self._out.add_mux_stream(codec.codec, rate=codec.rate, width=codec.width,
                                                height=codec.height)
        self._stream.time_base = codec.time_base
        self._last_dts: int | None = None  # of the last packet taken (muxed or in the group)
        self._group: list[Packet] = []  # packets since the last reference frame, not muxed yet
        self._top: int | None = None  # the latest pts taken
        self._muxed_top: int | None = None  # the latest pts muxed
        self.audio = AudioTrack(self._out, audio, self.start_time) if audio and audio.template is not None else None

    def write_audio(self, packet: Packet) -> None:
        if self.audio is not None:
            self.audio.write(packet)

    def write(self, packet: Packet) -> None:
        if packet.pts is None:
            return  # nothing to place it by
        dts = packet.dts if packet.dts is not None else packet.pts
        if self._last_dts is not None and dts - self.origin <= self._last_dts:
            return  # a repeated or out-of-order packet: the MP4 index needs rising decode times
        self._last_dts = dts - self.origin
        if self._top is None or packet.pts > self._top:  # a reference frame: the group before it is whole
            self._flush()
            self._top = packet.pts
        self._group.append(packet)

    def _flush(self) -> None:
        for packet in self._group:
            dts = packet.dts if packet.dts is not None else packet.pts
            p = av.Packet(packet.data)
            p.pts, p.dts = packet.pts - self.origin, dts - self.origin
            p.duration = packet.duration
            p.time_base = self.codec.time_base
            p.is_keyframe = packet.keyframe
            p.stream = self._stream
            self._out.mux(p)
            self.packets += 1
            self.last_time = max(self.last_time, packet.time)
            self._muxed_top = packet.pts if self._muxed_top is None else max(self._muxed_top, packet.pts)
        self._group = []

    def _last_group_whole(self) -> bool:
        """Whether the pending group's frames fill the time from the last muxed frame to its own last one."""
        step = _frame_ticks(self.codec) or min((p.duration for p in self._group if p.duration > 0), default=0)
        if not step or self._top is None:
            return True  # no frame grid to count on: as before, written
        low = self._muxed_top if self._muxed_top is not None else min(p.pts for p in self._group) - step
        return len({p.pts for p in self._group}) >= round((self._top - low) / step)

    def close(self) -> None:
        if self._group and not self._last_group_whole():
            self.dropped_at_end = len(self._group)
            self._group = []
        self._flush()
        self._out.close()


def _frame_ticks(codec: CodecInfo) -> int:
    """One frame in the codec's time base, from its declared rate (0 when it declares none)."""
    if not codec.rate:
        return 0
    return round(1 / (Fraction(codec.rate) * Fraction(codec.time_base)))


def write_frames(path: Path, frames, fps: float | Fraction, size: tuple[int, int] | None = None) -> int:
    """Encode uint8 RGB frames (an iterable of (H, W, 3)) as a faststart H.264 MP4; returns the frame count.
    H and W are made even (yuv420p needs it) by dropping the last row or column."""
    rate = Fraction(fps).limit_denominator(1000)
    n = 0
    with av.open(str(path), "w", format="mp4", options=FASTSTART) as out:
        stream = None
        for image in frames:
            image = np.ascontiguousarray(image[: image.shape[0] & ~1, : image.shape[1] & ~1])
            if stream is None:
                stream = out.add_stream(ENCODE_CODEC, rate=rate)
                stream.width, stream.height = image.shape[1], image.shape[0]
                stream.pix_fmt = ENCODE_PIXEL_FORMAT
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return n
