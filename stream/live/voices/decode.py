"""Decode a file's first audio track and resample it to the voice engines' rate: 16 kHz mono float32 in [-1, 1].

PyAV (FFmpeg) reads any container and codec FFmpeg knows (WAV, FLAC, MP3, AAC in MP4, Opus in WebM...), and its
`AudioResampler` (libswresample) converts the sample format and rate with FFmpeg's own anti-aliasing filter. The
channels are then averaged, as librosa- and torchaudio-based pipelines (and so the models' training data) do:
FFmpeg's own stereo-to-mono downmix adds 3 dB to a voice recorded in both channels. A file without an audio track is `NoAudioTrack` (the caller reports it, it is not an error of
the file); a file FFmpeg cannot read is a `SourceError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.live.sources.base import SourceError

TARGET_RATE = 16000


class NoAudioTrack(SourceError):
    """The file is readable media but has no audio track."""


@dataclass(frozen=True, slots=True)
class Audio:
    """Mono float32 samples at `rate`, and what the file held before resampling."""

    samples: np.ndarray
    rate: int
    source_rate: int
    source_channels: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def decode_audio(path: str | Path, rate: int = TARGET_RATE) -> Audio:
    """The first audio track of `path`, resampled to `rate` mono float32."""
    import av

    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: not a readable media file ({type(exc).__name__})") from None
    with container:
        if not container.streams.audio:
            raise NoAudioTrack(f"{path}: no audio track")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", rate=rate)  # planar float, the source's channels kept
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                chunks += [f.to_ndarray().mean(axis=0) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().mean(axis=0) for f in resampler.resample(None)]  # the filter's tail
        except av.error.FFmpegError as exc:
            raise SourceError(f"{path}: audio could not be decoded ({type(exc).__name__}: {exc})") from None
        source_rate = int(stream.rate or stream.codec_context.sample_rate or 0)
        channels = int(stream.codec_context.channels or 0)
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    return Audio(samples=np.clip(samples, -1.0, 1.0), rate=rate, source_rate=source_rate, source_channels=channels)


def has_video(path: str | Path) -> bool:
    """Whether FFmpeg finds a video (or still-image) track in `path`; False for audio-only or unreadable files."""
    import av

    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return False
