"""Rolling verdicts: per track, smooth the fused p(fake) over a window and decide with hysteresis.

- Fusion happens before (`stream.live.scoring.Fusion`, once per face): a verdict sees one p(fake) per update.
- Smoothing: rolling median (robust to single-frame spikes) or EMA (reacts faster) over the fused scores.
- Hysteresis: a track becomes "fake" after `k` consecutive smoothed updates >= `t_high`, and returns to "real"
  after `k` consecutive updates <= `t_low`; it starts "uncertain" and otherwise keeps its verdict, so a score
  wavering around one threshold never flaps.
- A lower bar (`t_under`, set only by a camera baseline learned with `direction: both`): a track turns "fake"
  after `k` consecutive smoothed updates <= `t_under`, with the reason `UNLIKE_CAMERA` (a departure from the
  camera's normal, not the detector seeing a fake). Mirroring the upper band, a track counts toward "real" only
  at or above `t_under_release` (the lowest level the camera's real footage held), so a score wavering around the
  lower bar does not flap.
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
UNLIKE_CAMERA = "unlike this camera"  # the reason of a fake verdict from the lower bar



@dataclass
class TrackVerdict:
    """The rolling state of one face track."""

    policy: VerdictPolicy
    verdict: Verdict = "uncertain"
    smoothed: float | None = None
    history: deque = field(default_factory=deque)
    _run_high: int = 0
    _run_low: int = 0
    _run_under: int = 0
    reason: str | None = None  # why the verdict is fake: UNLIKE_CAMERA for the lower bar, else None

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
        release = p.t_under_release if p.t_under_release is not None else p.t_under
        self._run_under = self._run_under + 1 if p.t_under is not None and s <= p.t_under else 0
        self._run_low = self._run_low + 1 if s <= p.t_low and (release is None or s >= release) else 0
        if self._run_high >= p.k:
            self.verdict, self.reason = "fake", None
        elif self._run_under >= p.k:
            self.verdict, self.reason = "fake", UNLIKE_CAMERA
        elif self._run_low >= p.k:
            self.verdict, self.reason = "real", None
        return self.verdict


def worst(verdicts: list[Verdict]) -> Verdict | None:
    """The stream-level verdict: its most severe track, or None without tracks."""
    return max(verdicts, key=SEVERITY.__getitem__) if verdicts else None
