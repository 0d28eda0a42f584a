"""Small, thread-safe measurements for status messages: event rates and latency percentiles."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

RATE_WINDOW_S = 2.0  # rates are counted over this trailing window
LATENCY_SAMPLES = 200


class RateMeter:
    """Events per second over the last RATE_WINDOW_S seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            return len(self._times) / self.window_s


class LatencyMeter:
    """Recent latencies (seconds) and their percentiles in milliseconds."""

    def __init__(self, samples: int = LATENCY_SAMPLES) -> None:
        self._values: deque[float] = deque(maxlen=samples)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)

    def percentile_ms(self, q: float) -> float | None:
        with self._lock:
            if not self._values:
                return None
            return float(np.percentile(np.asarray(self._values), q) * 1000.0)
