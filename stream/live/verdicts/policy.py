"""Rolling verdicts: per track, smooth the fused p(fake) over a window and decide with hysteresis.

- Fusion happens before (`stream.live.scoring.Fusion`, once per face): a verdict sees one p(fake) per update.
- Smoothing: rolling median (robust to single-frame spikes) or EMA (reacts faster) over the fused scores.
- Hysteresis: a track becomes "fake" after `k` consecutive smoothed updates >= `t_high`, and returns to "real"
  after `k` consecutive updates <= `t_low`; it starts "uncertain" and otherwise keeps its verdict, so a score
  wavering around one threshold never flaps.
- A stream's verdict is its worst track: fake > uncertain > real.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from stream.config.verdicts import VerdictPolicy

Verdict = Literal["real", "uncertain", "fake"]
SEVERITY: dict[str, int] = {"real": 0, "uncertain": 1, "fake": 2}


@dataclass
class TrackVerdict:
    """The rolling state of one face track."""

    policy: VerdictPolicy
    verdict: Verdict = "uncertain"
    smoothed: float | None = None
    history: deque = field(default_factory=deque)
    _run_high: int = 0
    _run_low: int = 0

    def update(self, fused: float | None) -> Verdict:
        """Take one face-frame's fused p(fake) (None: no engine scored it, nothing changes)."""
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
