"""Videos with sound for the live voice tests, made with PyAV in the test's own folder: a shared FF++ video's
pictures (remuxed, untouched) with speech from ../shared/data/speech (or any samples) encoded as AAC beside them,
and readers that say what an MP4's audio track holds."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from support.voice_media import RATE, speech_16k, speech_files


def speech_run(seconds: float, label: str = "real") -> np.ndarray:
    """At least `seconds` of the shared speech of `label` at 16 kHz, files one after another (cycled)."""
    files = speech_files(label)
    assert files, f"no shared {label} speech"
    parts, total, i = [], 0, 0
    while total < seconds * RATE:
        wave = speech_16k(files[i % len(files)])
        parts.append(wave)
        total += len(wave)
        i += 1
    return np.concatenate(parts)[: int(seconds * RATE)].astype(np.float32)


def video_with_sound(video: Path, samples: np.ndarray, out: Path, rate: int = RATE, seconds: float | None = None,
                     codec: str = "aac", fmt: str | None = None) -> Path:
    """`video`'s pictures (its first `seconds`, whole packets from its start) with `samples` (mono float at `rate`)
    as a `codec` audio track, into `out`."""
    with av.open(str(video)) as src:
        vin = src.streams.video[0]
        with av.open(str(out), "w", format=fmt) as dst:
            vout = dst.add_stream_from_template(vin)
            aout = dst.add_stream(codec, rate=rate, layout="mono")
            for packet in src.demux(vin):
                if packet.dts is None:
                    continue
                if seconds is not None and packet.pts is not None and packet.pts * vin.time_base > seconds:
                    break
                packet.stream = vout
                dst.mux(packet)
            n = len(samples) if seconds is None else min(len(samples), int(seconds * rate))
            pcm = np.clip(samples[:n], -1, 1).astype(np.float32)
            for start in range(0, n, 1024):
                frame = av.AudioFrame.from_ndarray(pcm[None, start:start + 1024], format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
                for p in aout.encode(frame):
                    dst.mux(p)
            for p in aout.encode(None):
                dst.mux(p)
    return out


def audio_track(path: Path) -> dict | None:
    """What the first audio track of `path` holds: codec, rate, channels, seconds decoded, peak; None without."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        samples, peak = 0, 0.0
        for frame in c.decode(s):
            samples += frame.samples
            peak = max(peak, float(np.abs(frame.to_ndarray()).max()) if frame.samples else 0.0)
        return {"codec": s.codec_context.name, "rate": s.codec_context.sample_rate,
                "channels": s.codec_context.channels, "seconds": samples / s.codec_context.sample_rate, "peak": peak}


def video_seconds(path: Path) -> float:
    """The span of the first video track's frames (first to last presentation time, plus one frame)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        times = [float(f.time) for f in c.decode(s) if f.time is not None]
        rate = float(s.average_rate or 25)
    return max(times) - min(times) + 1 / rate if times else 0.0
