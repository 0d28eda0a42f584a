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
    stream's sound goes beside it (`write_audio`, audio_track.py)."""

    def __init__(self, path: Path, codec: CodecInfo, first: Packet, audio: AudioCodecInfo | None = None) -> None:
        if first.pts is None or not first.keyframe:
            raise ValueError("a recording starts at a keyframe with a timestamp")
        self.path = path
        self.codec = codec
        self.origin = first.pts if first.pts is not None else (first.dts or 0)
        self.start_time = first.time  # the source time of the clip's 0
        self.packets = 0
        self.last_time = first.time
        self._out = av.open(str(path), "w", format="mp4", options=FASTSTART)
        self._stream = self._out.add_mux_stream(codec.codec, rate=codec.rate, width=codec.width,
                                                height=codec.height)
        self._stream.time_base = codec.time_base
        self._last_dts: int | None = None
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
        p = av.Packet(packet.data)
        p.pts, p.dts = packet.pts - self.origin, dts - self.origin
        p.duration = packet.duration
        p.time_base = self.codec.time_base
        p.is_keyframe = packet.keyframe
        p.stream = self._stream
        self._out.mux(p)
        self._last_dts = p.dts
        self.packets += 1
        self.last_time = max(self.last_time, packet.time)

    def close(self) -> None:
        self._out.close()


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
