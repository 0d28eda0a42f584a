"""Subscriptions to one kind of event: `subscribe(fn)` returns the unsubscriber, the owner calls `notify(...)`.

Why: a side effect (metrics, a relay's sync message) subscribes to the object that produces the event, instead of
installing a callable into one of its attributes. The producer's class then shows every event it offers, and any
number of subscribers can listen without knowing of each other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

E = TypeVar("E")


class Listeners(Generic[E]):
    """The subscribers of one event, called in the order they subscribed, on the thread that notifies.

    The list is replaced, never changed in place, so `notify` reads it without a lock: subscribing from another
    thread is safe and costs the producer nothing. A subscriber that raises is logged and the others still run:
    a broken side effect must not break the pipeline that produced the event."""

    def __init__(self, event: str) -> None:
        self.event = event  # named in the log when a subscriber fails
        self._subscriptions: tuple[tuple[object, Callable[[E], None]], ...] = ()  # (token, fn)
        self._lock = threading.Lock()

    def subscribe(self, fn: Callable[[E], None]) -> Callable[[], None]:
        """Call `fn(event)` on every `notify`; returns the unsubscriber of this subscription (idempotent)."""
        token = object()
        with self._lock:
            self._subscriptions = (*self._subscriptions, (token, fn))

        def unsubscribe() -> None:
            with self._lock:
                self._subscriptions = tuple(s for s in self._subscriptions if s[0] is not token)

        return unsubscribe

    def notify(self, event: E) -> None:
        for _, fn in self._subscriptions:
            try:
                fn(event)
            except Exception:
                log.exception("a %s subscriber failed", self.event)

    def __len__(self) -> int:
        return len(self._subscriptions)
