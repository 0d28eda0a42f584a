"""Rolling verdicts: per track, fuse the engines' p(fake), smooth it over a window, and decide with hysteresis.

- Fusion: a weighted mean of the p(fake) of the engines that have scored the track (weights from config).
- Smoothing: rolling median (robust to single-frame spikes) or EMA (reacts faster) over the fused scores.
- Hysteresis: a track becomes "fake" after `k` consecutive smoothed updates >= `t_high`, and returns to "real"
  after `k` consecutive updates <= `t_low`; it starts "uncertain" and otherwise keeps its verdict, so a score
  wavering around one threshold never flaps.
- A stream's verdict is its worst track: fake > uncertain > real.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from stream.config.verdicts import VerdictPolicy
from stream.live.scoring import fuse

Verdict = Literal["real", "uncertain", "fake"]
SEVERITY: dict[str, int] = {"real": 0, "uncertain": 1, "fake": 2}


@dataclass
class TrackVerdict:
    """The rolling state of one face track."""

    policy: VerdictPolicy
    fusion: Callable[[Mapping[str, float]], float | None] | None = None  # default: the policy's weighted mean
    verdict: Verdict = "uncertain"
    smoothed: float | None = None
    history: deque = field(default_factory=deque)
    _run_high: int = 0
    _run_low: int = 0

    def update(self, engines: dict[str, float]) -> Verdict:
        fused = self.fusion(engines) if self.fusion is not None else fuse(engines, self.policy.weights)
        if fused is None:
            return self.verdict
        p = self.policy
        if p.smoothing == "median":
            self.history.append(fused)
            while len(self.history) > p.window:
                self.history.popleft()
            self.smoothed = float(np.median(self.history))
        else:
            self.smoothed = fused if self.smoothed is None else p.ema_alpha * fused + (1 - p.ema_alpha) * self.smoothed
        s = self.smoothed
        self._run_high = self._run_high + 1 if s >= p.t_high else 0
        self._run_low = self._run_low + 1 if s <= p.t_low else 0
        if self._run_high >= p.k:
            self.verdict = "fake"
        elif self._run_low >= p.k:
            self.verdict = "real"
        return self.verdict


def worst(verdicts: list[Verdict]) -> Verdict | None:
    """The stream-level verdict: its most severe track, or None without tracks."""
    return max(verdicts, key=SEVERITY.__getitem__) if verdicts else None
