"""The one bounded, dropping worker behind the evidence encoders (encoder.py for frames, audio_encoder.py for sound).

Policy: the producer (a source's decoder thread, or the event loop for WebRTC) must never wait on a recording, so
`submit` puts without blocking and a full queue drops the newest item, counted in `dropped`. The bound is each
encoder's `capacity`: larger rides out longer stalls of the encoder at the cost of memory and of a recording that
lags further behind the live picture. One daemon thread per encoder handles items in order; an item that fails is
logged and skipped, so one bad frame never ends the recording.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class DroppingWorker(Generic[T]):
    """A bounded queue drained in order by one worker thread. Subclasses say what one item does (`_handle`) and what
    a failure is called in the log (`WHAT`)."""

    WHAT = "handling an item"

    def __init__(self, name: str, thread_name: str, capacity: int) -> None:
        self.name = name
        self.dropped = 0
        self._queue: queue.Queue[T | None] = queue.Queue(capacity)
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Items waiting for the worker now (beyond the capacity they are dropped, counted in `dropped`)."""
        return self._queue.qsize()

    def submit(self, item: T) -> None:
        """Called on the producer's thread: hand the item on, never wait."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Let the worker finish what is queued, then stop it (waits at most about `timeout` twice)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._handle(item)
            except Exception:
                log.exception("%s: %s failed", self.name, self.WHAT)

    def _handle(self, item: T) -> None:
        raise NotImplementedError
