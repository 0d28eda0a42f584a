"""A voice alert's scored windows as evidence: what the engines heard (a 16 kHz mono WAV of the windows, one after
another) and what they said of it (a JSON list: each window's span on the stream's clock, its speech share, each
engine's p(fake) and the fused one, or why it was not judged, and where it lies in the WAV). Written on the
evidence thread; the standard library's `wave` and `json` are all it needs.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np

from stream.live.evidence.names import VOICE_SOUND, VOICE_WINDOWS

FORMAT = "dfstream-voice-windows/1"


def write_voice_windows(folder: Path, sound: Any) -> list[str]:
    """Write `sound` (stream.live.voices.track.SoundEvidence: `rate` and `windows`, oldest first) into `folder`;
    returns the names written."""
    folder.mkdir(parents=True, exist_ok=True)
    listed, offset = [], 0
    parts = []
    for w in sound.windows:
        pcm = (np.clip(w.samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
        parts.append(pcm)
        listed.append({**w.to_json(), "wav_offset_s": round(offset / sound.rate, 3),
                       "wav_seconds": round(len(pcm) / sound.rate, 3)})
        offset += len(pcm)
    with wave.open(str(folder / VOICE_SOUND), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sound.rate)
        out.writeframes(np.concatenate(parts).tobytes() if parts else b"")
    body = {"format": FORMAT, "rate": sound.rate, "sound": VOICE_SOUND, "windows": listed}
    (folder / VOICE_WINDOWS).write_text(json.dumps(body, indent=2))
    return [VOICE_WINDOWS, VOICE_SOUND]
