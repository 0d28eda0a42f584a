"""A stream's newest sound at the voice engines' rate: one preallocated circular buffer of 16 kHz mono float32.

Written on the source's thread (through `feed.AudioFeed`), read by the voice thread (the newest window) and the
scheduler (the level meter of each overlay). Its size is fixed when it is made, so a stream's sound costs the same
memory whatever its length, and a scorer that falls behind finds the newest window, never a backlog.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

# Policy: the ring holds two of the longest engine window (about 8 s for AASIST, 0.5 MB per stream). One window
# is all the scorer reads; the second gives the voice thread a whole window's time to come round before the sound
# it would have scored is overwritten. Longer only costs memory, since the scorer always takes the newest window.
RING_WINDOWS = 2
LEVEL_S = 0.1  # the level meter's span: the last 100 ms
SILENT_DB = -90.0  # the level of digital silence (log of zero), floored here


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The newest `len(samples)` samples of a ring, and where they end: `total` samples written before their end,
    `end` the stream-clock time just after the last one."""

    samples: np.ndarray
    total: int
    end: float


class AudioRing:
    def __init__(self, capacity: int, rate: int) -> None:
        if capacity <= 0:
            raise ValueError("an audio ring needs room for at least one sample")
        self.capacity = capacity
        self.rate = rate
        self._buf = np.zeros(capacity, np.float32)
        self.total = 0  # samples written since the ring was made
        self.end: float | None = None  # stream-clock time just after the newest sample
        self.arrived: float | None = None  # monotonic clock when the newest sample arrived
        self._lock = threading.Lock()

    @property
    def storage(self) -> np.ndarray:
        """The preallocated sample buffer itself: fixed memory, never replaced or grown (read it with `latest`)."""
        return self._buf

    def write(self, samples: np.ndarray, end: float, arrived: float) -> None:
        """Append `samples` (float32 in [-1, 1]) whose last one ends at stream time `end`."""
        n = len(samples)
        if n == 0:
            return
        keep = samples[-self.capacity:] if n > self.capacity else samples
        with self._lock:
            i = (self.total + n - len(keep)) % self.capacity
            first = min(len(keep), self.capacity - i)
            self._buf[i:i + first] = keep[:first]
            self._buf[:len(keep) - first] = keep[first:]
            self.total += n
            self.end, self.arrived = end, arrived

    def latest(self, n: int) -> Snapshot | None:
        """A copy of the newest `n` samples, or None while fewer have been written (or `n` exceeds the ring)."""
        with self._lock:
            if n > self.capacity or self.total < n or self.end is None:
                return None
            return Snapshot(self._take(n), self.total, self.end)

    def _take(self, n: int) -> np.ndarray:
        start = (self.total - n) % self.capacity
        if start + n <= self.capacity:
            return self._buf[start:start + n].copy()
        return np.concatenate([self._buf[start:], self._buf[:start + n - self.capacity]])

    def level_db(self, seconds: float = LEVEL_S) -> float | None:
        """The RMS level of the newest `seconds` in dBFS (full-scale sine: -3 dB); None before any sound."""
        n = min(self.capacity, max(1, int(seconds * self.rate)))
        with self._lock:
            if self.total == 0:
                return None
            tail = self._take(min(n, self.total))
        rms = float(np.sqrt(np.mean(np.square(tail, dtype=np.float64))))
        return max(SILENT_DB, 20.0 * math.log10(rms)) if rms > 0 else SILENT_DB
