"""Score a clip's voice: each engine's windows, the speech gate, one batched `predict` per engine.

A window whose voiced share is under the policy is `low-quality` with its reason and is never given to an engine,
as a face below an engine's quality floor is never judged. Records only: the offline scan sums them per file, and
a live audio ring can feed the same `score_windows` with the windows it has filled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engines.voice_base import VoiceEngine
from stream.live.voices.vad import SpeechDetector, Voicing
from stream.live.voices.windows import Window, cut_windows

MAX_BATCH = 16  # windows per predict call: bounds memory on long files (AASIST holds ~60 MB of activations each)


@dataclass(frozen=True, slots=True)
class WindowScore:
    """One engine's verdict on one window: p(fake), or None with the reason it was not judged."""

    engine: str
    start_s: float
    end_s: float
    voiced: float  # share of the window's VAD frames that are speech
    p_fake: float | None
    reason: str | None = None

    @property
    def judged(self) -> bool:
        return self.p_fake is not None

    def to_json(self) -> dict:
        return {"engine": self.engine, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "voiced": round(self.voiced, 3), "p_fake": self.p_fake, "reason": self.reason}


class VoiceScorer:
    """The voice engines and the speech detector: a 16 kHz clip in, `WindowScore`s per engine out."""

    def __init__(self, engines: Sequence[VoiceEngine], detector: SpeechDetector, hop: int | None = None) -> None:
        """`hop`: samples between window starts (default half a window, windows.HOP_FRACTION)."""
        if not engines:
            raise ValueError("voice scoring needs at least one voice engine")
        rates = {e.spec.sample_rate for e in engines}
        if len(rates) != 1:
            raise ValueError(f"voice engines at different sample rates cannot share one clip: {sorted(rates)}")
        self.engines = list(engines)
        self.detector = detector
        self.rate = rates.pop()
        self.hop = hop

    def score(self, samples: np.ndarray) -> list[WindowScore]:
        """Every engine's windows over one clip, in engine then time order."""
        voicing = self.detector.voicing(samples)
        out: list[WindowScore] = []
        for engine in self.engines:
            spans, batch = cut_windows(samples, engine.spec, self.hop)
            out += self.score_windows(engine, spans, batch, voicing)
        return out

    def score_windows(self, engine: VoiceEngine, spans: Sequence[Window], batch: np.ndarray,
                      voicing: Voicing) -> list[WindowScore]:
        """Gate each window by its voiced share, then score the speech windows in batches."""
        fractions = [voicing.fraction(w.start, w.end) for w in spans]
        reasons = [self.detector.reason(f) for f in fractions]
        keep = [i for i, r in enumerate(reasons) if r is None]
        p = np.full(len(spans), np.nan, np.float32)
        for first in range(0, len(keep), MAX_BATCH):
            rows = keep[first:first + MAX_BATCH]
            p[rows] = engine.predict(batch[rows])
        return [WindowScore(engine.name, *w.seconds(self.rate), fractions[i],
                            None if reasons[i] else float(p[i]), reasons[i]) for i, w in enumerate(spans)]
