"""A bounded hand-off between a source's decoder thread and the scheduler, with a named overflow policy."""

from __future__ import annotations

import threading
from collections import deque

from stream.config.sources import BufferPolicy
from stream.live.sources.base import Frame


class LatestFrameBuffer:
    """Holds at most `capacity` frames. `take_latest` returns the newest and discards (and counts) older ones."""

    def __init__(self, capacity: int = 1, policy: BufferPolicy = BufferPolicy.DROP_OLDEST) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.policy = policy
        self._frames: deque[Frame] = deque()
        self._cond = threading.Condition()
        self.received = 0
        self.dropped = 0
        self.taken = 0
        self._closed = False

    def put(self, frame: Frame, timeout: float | None = None) -> bool:
        """Add a frame. Under WAIT, blocks while full (up to `timeout`); returns False if it was not added."""
        with self._cond:
            if self.policy is BufferPolicy.WAIT:
                if not self._cond.wait_for(lambda: len(self._frames) < self.capacity or self._closed, timeout):
                    return False
                if self._closed:
                    return False
            elif len(self._frames) >= self.capacity:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self.received += 1
            self._cond.notify_all()
            return True

    def take_latest(self) -> Frame | None:
        """The newest frame, or None if empty. Under DROP_OLDEST older frames are discarded and counted as
        dropped; under WAIT the oldest is returned so none is skipped."""
        with self._cond:
            if not self._frames:
                return None
            if self.policy is BufferPolicy.WAIT:
                frame = self._frames.popleft()
            else:
                frame = self._frames.pop()
                self.dropped += len(self._frames)
                self._frames.clear()
            self.taken += 1
            self._cond.notify_all()
            return frame

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)

    def close(self) -> None:
        """Wake any waiting producer; later puts are refused."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
