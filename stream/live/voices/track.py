"""One stream's voice as the voice thread holds it (`VoiceTrack`: its ring, its rolling verdict, its latest windows),
and the records of a judged window (`ScoredWindow`) and of a voice alert's evidence (`SoundEvidence`).

The voice counterpart of the scheduler's `Track`: one record per stream with sound, freed in one place (the voice
thread drops it when the stream goes).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.live.verdicts.policy import TrackVerdict
from stream.live.voices.ring import AudioRing

EVIDENCE_WINDOWS = 6  # recent windows a voice alert's evidence keeps: about 12-25 s of what the engines heard


@dataclass(frozen=True, slots=True)
class ScoredWindow:
    """One window of one stream as the voice thread judged it: its span on the stream's clock, its speech share,
    each engine's (calibrated) p(fake) and the fused one, or the reason it was not judged; and its samples."""

    start: float
    end: float
    voiced: float
    engines: dict[str, float]
    p_fake: float | None
    reason: str | None
    samples: np.ndarray = field(repr=False, compare=False)  # 16 kHz mono float32: the longest engine's window

    def to_json(self) -> dict[str, Any]:
        return {"start_s": round(self.start, 3), "end_s": round(self.end, 3), "voiced": round(self.voiced, 3),
                "p_fake": None if self.p_fake is None else round(self.p_fake, 6),
                "engines": {k: round(v, 6) for k, v in self.engines.items()}, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class SoundEvidence:
    """What a voice alert's start carries, in process, for the evidence recorder: the stream's recent windows
    (oldest first) and their rate."""

    rate: int
    windows: tuple[ScoredWindow, ...]


@dataclass(eq=False)
class VoiceTrack:
    """One stream's voice: the ring its source's sound fills, the rolling verdict, the latest and recent windows,
    and the pacing counters. Written on the voice thread; read under the voice loop's lock."""

    name: str
    ring: AudioRing
    verdict: TrackVerdict
    unsubscribe: Callable[[], None]
    scored_total: int = 0  # ring.total at the end of the last scored window (0: none yet)
    scored_at: float = 0.0  # monotonic time of the last scoring: the longest-waiting stream goes first
    windows: int = 0
    skipped: int = 0
    silent: bool = False  # no sound for lost_after_s: the alert was ended and the verdict starts afresh
    latest: ScoredWindow | None = None
    recent: deque[ScoredWindow] = field(default_factory=lambda: deque(maxlen=EVIDENCE_WINDOWS))

    def evidence(self) -> SoundEvidence:
        return SoundEvidence(self.ring.rate, tuple(self.recent))
