"""Audio packets for sources that have none MP4 can hold (browser webcams and shared tabs, whose sound aiortc
decodes; cameras sending G.711): their decoded sound is encoded to AAC on a worker thread and fed to the stream's
audio ring like a file's own packets (the video's counterpart is encoder.py).

Policy: FFmpeg's native AAC encoder at its default bitrate (128 kbit/s), at the sound's own rate, mono or stereo as
it comes (more channels are mixed down to stereo). AAC-LC in MP4 plays in every browser and costs well under 1 % of
a core; the encoder's parameters travel with its packets (`AudioCodecInfo.template` is the encoder's own stream,
its header written to memory), so a recording copies them exactly. When the worker falls behind, chunks are
dropped at a bounded queue (counted), never queued without limit.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction

import av

from stream.live.evidence.dropping import DroppingWorker
from stream.live.sources import AudioChunk, AudioCodecInfo, Packet

CODEC = "aac"
QUEUE_CHUNKS = 100  # about 2 s of WebRTC's 20 ms chunks waiting for the encoder before new ones are dropped
JUMP_S = 0.25  # a chunk this far from where the last one ended starts a new run of timestamps (a gap, a reset)


class AudioEncoder(DroppingWorker[AudioChunk]):
    WHAT = "encoding sound for the recording"

    def __init__(self, name: str, on_packet: Callable[[Packet], None]) -> None:
        self.on_packet = on_packet
        self.info: AudioCodecInfo | None = None
        self._stream = self._resampler = None
        self._next_pts: int | None = None
        super().__init__(name, f"encode-audio-{name}", QUEUE_CHUNKS)

    def _handle(self, chunk: AudioChunk) -> None:
        if self._stream is None:
            self._stream, self._resampler = self._open(chunk)
        assert self.info is not None and self._resampler is not None
        rate = self.info.rate
        start = int(round(chunk.time * rate))
        if self._next_pts is None or abs(start - self._next_pts) > JUMP_S * rate:
            self._next_pts = start
        for frame in self._resampler.resample(chunk.frame):
            frame.pts, frame.time_base = self._next_pts, Fraction(1, rate)
            self._next_pts += frame.samples
            for p in self._stream.encode(frame):
                if p.pts is not None:
                    self.on_packet(Packet(bytes(p), p.pts, p.dts, int(p.duration or 0), True, self.info))

    def _open(self, chunk: AudioChunk):
        """The encoder's stream (in an in-memory MP4 whose header is written, so its parameters are final) and the
        resampler into its sample format."""
        rate, layout = chunk.rate, "mono" if chunk.frame.layout.nb_channels == 1 else "stereo"
        out = av.open(io.BytesIO(), "w", format="mp4")
        stream = out.add_stream(CODEC, rate=rate, layout=layout)
        out.start_encoding()
        self.info = AudioCodecInfo(CODEC, rate, stream.codec_context.channels, Fraction(1, rate), template=stream)
        return stream, av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=rate)
