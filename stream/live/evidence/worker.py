"""The evidence thread: every evidence file is written here, in the order asked, and nothing else waits on it.

It owns its queue and its timetable. `submit(fn, *args)` runs `fn` as soon as the tasks before it are done;
`later(delay_s, fn, *args)` runs it once `delay_s` have passed (a stalled stream's recording is completed that
way), without a timer thread per task: the thread waits on its queue until the earliest of those is due.

Threads: `submit`, `later`, `flush` and `close` from any thread; tasks only on this one. `close` runs what was
submitted before it and drops what is still timed (the recorder completes its recordings before closing).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


class EvidenceWorker:
    def __init__(self, name: str = "evidence") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._timed: list[tuple[float, int, Callable[..., Any], tuple]] = []  # this thread's only
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run `fn(*args)` on the evidence thread after what is queued; failures are logged (and in the Future)."""
        future: Future = Future()
        if self._closed:
            log.warning("evidence thread closed: %s not run", getattr(fn, "__qualname__", fn))
            future.cancel()
            return future
        self._queue.put((future, fn, args))
        return future

    def later(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the evidence thread once `delay_s` have passed."""
        if not self._closed:
            self._queue.put((time.monotonic() + delay_s, fn, args))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted so far has run (tests, shutdown)."""
        future = self.submit(lambda: None)
        if not future.cancelled():
            future.result(timeout)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        while True:
            wait = max(0.0, self._timed[0][0] - time.monotonic()) if self._timed else None
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if item is not None:
                head, fn, args = item
                if isinstance(head, Future):
                    self._call(fn, args, head)
                else:
                    heapq.heappush(self._timed, (head, next(self._order), fn, args))
            while self._timed and self._timed[0][0] <= time.monotonic():
                _, _, fn, args = heapq.heappop(self._timed)
                self._call(fn, args, None)

    @staticmethod
    def _call(fn: Callable[..., Any], args: tuple, future: Future | None) -> None:
        if future is not None and not future.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - one failed write must not stop the thread
            log.error("writing evidence failed: %s", exc, exc_info=exc)
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)
