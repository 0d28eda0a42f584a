"""Audio the voice tests make and read: WAV files written with the standard library, synthetic sounds that are not
speech (silence, a melody, a chord, noise), and the shared speech (../shared/data/speech) decoded at 16 kHz."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from support.shared import MESONET_WEIGHTS, SHARED

SPEECH = SHARED / "data" / "speech"
AASIST_WEIGHTS = SHARED / "weights" / "aasist"
RATE = 16000


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    """16-bit PCM WAV of float samples in [-1, 1] (the same signal in every channel)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1).reshape(-1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit mono WAV as float64 samples / 32768, as soundfile.read (the authors' loader) returns them."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768.0


def sine(freq: float, seconds: float, rate: int, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def melody(seconds: float, rate: int = RATE) -> np.ndarray:
    """A tune of harmonic notes (five partials, 250 ms each, soft attack): music-like, no voice."""
    notes = (261.6, 329.6, 392.0, 523.3, 440.0, 349.2, 293.7, 246.9)
    note = int(0.25 * rate)
    out = np.zeros(int(seconds * rate))
    for i in range(0, len(out), note):
        t = np.arange(min(note, len(out) - i)) / rate
        f0 = notes[(i // note) % len(notes)]
        out[i:i + len(t)] = sum(0.3 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 6)) * np.minimum(1, 20 * t)
    return out


def chord(seconds: float, rate: int = RATE) -> np.ndarray:
    return sum(sine(f, seconds, rate, 0.15) for f in (220.0, 277.2, 329.6))


def speech_files(label: str) -> list[Path]:
    return sorted((SPEECH / label).glob("*.wav"))


def speech_16k(path: Path) -> np.ndarray:
    from stream.live.voices import decode_audio

    return decode_audio(path).samples
