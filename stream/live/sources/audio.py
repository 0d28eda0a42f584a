"""A PyAV source's sound, beside its pictures: the container's first audio track, demuxed on the decoder thread in
the same read as the video, handed on as compressed packets (for recordings, which remux them) and, only while
someone listens, as decoded chunks (for the voice path, and for recorders that must encode).

Kept apart from the video's decoding (`av_source.py`), which only asks this module for the branch and gives it
the audio packets. Sound never fails a source: a packet that does not decode is counted and skipped, so a camera
with a broken audio track still streams pictures.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any, Protocol

import av

from stream.live.sources.base import AudioChunk, AudioCodecInfo, Packet

log = logging.getLogger(__name__)

RECORDING_FORMAT = "mp4"  # the container alert recordings are written in (evidence/mp4.py)


class AudioSink(Protocol):
    """Who gets a source's sound (a `StreamSource`): asked per packet, so taps may come and go while it plays."""

    def wants_audio(self) -> bool: ...

    def wants_audio_packets(self) -> bool: ...

    def deliver_audio(self, chunk: AudioChunk) -> None: ...

    def deliver_audio_packet(self, packet: Packet) -> None: ...


def recording_template(stream: Any, fmt: str = RECORDING_FORMAT) -> Any | None:
    """`stream`'s codec parameters held by an output stream of an in-memory container that is never written (the
    stream keeps its container alive); None when `fmt` cannot hold the codec."""
    out = av.open(io.BytesIO(), "w", format=fmt)
    try:
        return out.add_stream_from_template(stream)
    except ValueError:  # e.g. 'mp4' format does not support 'pcm_mulaw'
        out.close()
        return None


class AudioBranch:
    """The first audio track of one open container, and where its packets go."""

    def __init__(self, stream: Any, sink: AudioSink) -> None:
        self.stream = stream
        self.index = stream.index
        self.sink = sink
        ctx = stream.codec_context
        self.info = AudioCodecInfo(ctx.name, int(stream.rate or ctx.sample_rate or 0), int(ctx.channels or 0),
                                   stream.time_base, recording_template(stream))
        self.chunks = 0
        self.errors = 0

    @classmethod
    def open(cls, container: Any, sink: AudioSink | None) -> AudioBranch | None:
        """The branch of `container`'s first audio track; None without a sink or without sound (no error)."""
        if sink is None or not container.streams.audio:
            return None
        return cls(container.streams.audio[0], sink)

    def take(self, packet: Any) -> None:
        """One demuxed audio packet: to the packet taps as it is, and decoded to the chunk taps if any listen."""
        if packet.size and packet.pts is not None and self.sink.wants_audio_packets():
            self.sink.deliver_audio_packet(Packet(bytes(packet), packet.pts, packet.dts, int(packet.duration or 0),
                                                  True, self.info))
        if not self.sink.wants_audio():
            return
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:
            self.errors += 1
            if self.errors == 1:
                log.warning("audio packet could not be decoded (%s); sound skipped where it fails", exc)
            return
        for frame in frames:
            self.chunks += 1
            t = float(frame.time) if frame.time is not None else 0.0
            self.sink.deliver_audio(AudioChunk(frame, t, time.monotonic()))
