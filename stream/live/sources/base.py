"""What every source shares: the decoded frame, the state machine and the error type."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class SourceState(str, Enum):
    """Life cycle of a source. Live sources move streaming <-> reconnecting; files end."""

    IDLE = "idle"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    STOPPED = "stopped"
    FAILED = "failed"


class SourceError(RuntimeError):
    """A source could not be opened or decoded. The message is meant for the user and holds no credentials."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded RGB frame.

    `time` is the presentation time in seconds from the stream's start (pts * time_base, or index / rate when
    the container gives no pts); `index` counts decoded frames, so gaps in it show what sampling skipped.
    `received` is the monotonic clock when it was decoded, for latency figures.
    """

    image: np.ndarray
    pts: int | None
    time: float
    index: int
    received: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.image.shape[1], self.image.shape[0]
