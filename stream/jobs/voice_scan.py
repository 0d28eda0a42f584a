"""`scan --modality voice`: one voice verdict per file, from its audio track.

Decode (PyAV, 16 kHz mono) -> each engine's sliding windows -> the speech gate (silero VAD) -> the voice engines ->
p(fake) per window. A file's score is the mean over engines of each engine's mean over its judged windows (the
mean over windows is `scan`'s video-level convention for faces). Labels: `fake`/`real` against the threshold,
`low-quality` when no window holds enough speech (with the reason), `no-audio` for media without an audio track,
`error` for a file that cannot be read. Nothing raises for a bad file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from engines.voice_base import VoiceEngine
from stream.live.sources import SourceError
from stream.live.voices import NoAudioTrack, SpeechDetector, VoiceScorer, WindowScore, decode_audio

VoiceLabel = Literal["fake", "real", "low-quality", "no-audio", "error"]
NO_AUDIO_REASON = "no audio track"


@dataclass(frozen=True)
class VoiceResult:
    path: str
    label: VoiceLabel
    score: float | None
    threshold: float
    model: str
    seconds: float = 0.0
    windows: list[WindowScore] = field(default_factory=list)
    engines: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None
    baseline: dict | None = None  # judged with a voice baseline: the rolling verdict under the camera's bar

    @property
    def judged(self) -> list[WindowScore]:
        return [w for w in self.windows if w.judged]

    def to_json(self) -> dict:
        return {"path": self.path, "modality": "voice", "label": self.label, "score": self.score,
                "threshold": self.threshold, "model": self.model, "seconds": round(self.seconds, 3),
                "windows_scored": len({(w.start_s, w.end_s) for w in self.judged}),
                "windows": [w.to_json() for w in self.windows], "engines": self.engines, "error": self.error,
                "reason": self.reason} | ({"baseline": self.baseline} if self.baseline is not None else {})


def fuse(windows: Sequence[WindowScore]) -> tuple[float | None, dict[str, float]]:
    """The mean over engines of each engine's mean over its judged windows, and those per-engine means."""
    per: dict[str, list[float]] = {}
    for w in windows:
        if w.p_fake is not None:
            per.setdefault(w.engine, []).append(w.p_fake)
    means = {e: float(np.mean(v)) for e, v in per.items()}
    return (float(np.mean(list(means.values()))) if means else None), means


class VoiceScanner:
    """Scores files' voices with one or more voice engines, fused by the mean of their p(fake)."""

    def __init__(self, engines: Sequence[VoiceEngine], thresholds: Sequence[float],
                 detector: SpeechDetector | None = None, hop_s: float | None = None) -> None:
        """`hop_s`: seconds between window starts (default half a window; a voice baseline's is 1 / its fps)."""
        rate = engines[0].spec.sample_rate if engines else 16000
        self.hop_s = hop_s
        self.scorer = VoiceScorer(engines, detector or SpeechDetector(),
                                  hop=max(1, int(round(hop_s * rate))) if hop_s else None)
        self.threshold = float(np.mean(thresholds))
        self.model_name = "+".join(e.name for e in engines)

    def scan(self, path: str | Path) -> VoiceResult:
        """Score one file's audio. Failures become `error` (unreadable) or `no-audio` results, never raises."""
        base = dict(path=str(path), threshold=self.threshold, model=self.model_name)
        try:
            audio = decode_audio(path, self.scorer.rate)
        except NoAudioTrack:
            return VoiceResult(label="no-audio", score=None, reason=NO_AUDIO_REASON, **base)
        except (SourceError, OSError) as exc:
            return VoiceResult(label="error", score=None, error=str(exc), **base)
        if len(audio.samples) == 0:
            return VoiceResult(label="no-audio", score=None, reason="the audio track is empty", **base)
        windows = self.scorer.score(audio.samples)
        score, engines = fuse(windows)
        if score is None:
            reason = next((w.reason for w in windows if w.reason), "no speech")
            return VoiceResult(label="low-quality", score=None, seconds=audio.seconds, windows=windows,
                               reason=reason, **base)
        label: VoiceLabel = "fake" if score >= self.threshold else "real"
        return VoiceResult(label=label, score=score, seconds=audio.seconds, windows=windows, engines=engines, **base)
