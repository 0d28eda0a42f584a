"""A source's decoded sound into its stream's ring: each `AudioChunk` resampled to the voice engines' rate and made
mono, on the source's own thread (a chunk is 20-30 ms of sound; resampling it takes tens of microseconds).

The conversion is the offline decoder's (decode.py): libswresample to planar float at 16 kHz, then the channels
averaged, so live windows are what `scan --modality voice` scores. A chunk of another format, rate or layout (a
reconnect, a browser switching microphones) starts a new resampler.
"""

from __future__ import annotations

import logging

import av
import numpy as np

from stream.live.sources import AudioChunk
from stream.live.voices.ring import AudioRing

log = logging.getLogger(__name__)


class AudioFeed:
    """Callable as an audio tap: `source.subscribe_audio(AudioFeed(ring))`."""

    def __init__(self, ring: AudioRing) -> None:
        self.ring = ring
        self.chunks = 0
        self.errors = 0
        self._resampler: av.AudioResampler | None = None
        self._shape: tuple[str, int, str] | None = None

    def __call__(self, chunk: AudioChunk) -> None:
        frame = chunk.frame
        shape = (frame.format.name, int(frame.sample_rate), frame.layout.name)
        if shape != self._shape:
            self._resampler, self._shape = av.AudioResampler(format="fltp", rate=self.ring.rate), shape
        try:
            parts = [f.to_ndarray().mean(axis=0) for f in self._resampler.resample(frame)]
        except (av.FFmpegError, ValueError) as exc:
            self.errors += 1
            if self.errors == 1:
                log.warning("sound could not be resampled (%s); those chunks are skipped", exc)
            return
        self.chunks += 1
        if parts:
            mono = np.clip(np.concatenate(parts), -1.0, 1.0).astype(np.float32, copy=False)
            self.ring.write(mono, chunk.time + chunk.seconds, chunk.received)
