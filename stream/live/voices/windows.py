"""Sliding windows of an engine's length over a clip: where each window starts and ends, and its samples.

A clip at least one window long gets windows every `hop` samples, plus one ending at the clip's end when the hop
grid leaves a tail unscored. A shorter clip is one window, filled as the engine's spec says (AASIST repeats it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.voice_base import AudioSpec, fit_window

# Hop between window starts, as a fraction of the window. Trade-off: half a window scores every sample twice
# (a splice near one window's edge sits in the middle of the next) at twice the cost of back-to-back windows;
# live, it halves how long a new voice waits for its first full window.
HOP_FRACTION = 0.5


@dataclass(frozen=True, slots=True)
class Window:
    """Samples [start, end) of the clip (end - start < the window's length for a short, filled clip)."""

    start: int
    end: int

    def seconds(self, rate: int) -> tuple[float, float]:
        return self.start / rate, self.end / rate


def window_spans(total: int, length: int, hop: int) -> list[Window]:
    """The windows of a clip of `total` samples: every `hop` from 0, then one aligned to the end if needed."""
    if total <= 0:
        return []
    if total <= length:
        return [Window(0, total)]
    starts = list(range(0, total - length + 1, hop))
    if starts[-1] + length < total:
        starts.append(total - length)
    return [Window(s, s + length) for s in starts]


def hop_for(spec: AudioSpec, fraction: float = HOP_FRACTION) -> int:
    return max(1, int(round(spec.samples * fraction)))


def cut_windows(samples: np.ndarray, spec: AudioSpec, hop: int | None = None) -> tuple[list[Window], np.ndarray]:
    """The windows of `samples` and their float32 batch (N, spec.samples), short clips filled per the spec."""
    spans = window_spans(len(samples), spec.samples, hop or hop_for(spec))
    if not spans:
        return [], np.zeros((0, spec.samples), np.float32)
    batch = np.stack([fit_window(samples[w.start:w.end], spec) for w in spans])
    return spans, batch
