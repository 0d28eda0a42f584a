"""The one in-process bus: producers publish frozen records (stream.messages), consumers subscribe by kind.

Why one bus: an alert used to pass through a taps list, a callbacks list and a channel fan-out, as dicts, wired in
three constructors. Now every producer (the scheduler, the sources' status, the alert lifecycle, the evidence
recorder) calls `publish(record)`, and every consumer (the websocket hub, the alert log, Redis, webhooks, MQTT,
metrics, the evidence recorder, the cluster's clocks) says what it wants with `subscribe(kind, fn)`, which
returns the function that unsubscribes. Frigate's communicator and aiortc's `MediaRelay.subscribe` are the models.

Rules:
- `kind` is a record class or a tuple of them (`stream.messages.WIRE` is every record that leaves the process).
- `fn` is called on the publisher's thread, in the order of subscription; it must be quick (hand the work to its
  own thread, as every channel does). One that raises is logged and the others still get the record.
- `wire=True`: `fn` gets the record's wire form (`to_message()`, a JSON-ready dict) instead of the record. It is
  made once per record and shared by every wire subscriber, so none may change it.
- A record published from inside a subscriber (an answer, an amendment) is delivered once the record being
  delivered has reached every subscriber: each thread's records reach each subscriber in the order published.
- Unsubscribing is idempotent; a subscriber removed while a record is being delivered may still get that one.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream.messages import Message

log = logging.getLogger(__name__)

Unsubscribe = Callable[[], None]


@dataclass(frozen=True, slots=True)
class _Subscription:
    kinds: tuple[type, ...]
    fn: Callable[[Any], None]
    wire: bool


class MessageBus:
    def __init__(self) -> None:
        self._subs: tuple[_Subscription, ...] = ()  # copy on write: publish() reads it without a lock
        self._lock = threading.Lock()
        self._local = threading.local()  # per thread: records published while one is being delivered
        self.failures = 0  # subscriber calls that raised

    def subscribe(self, kind: type | tuple[type, ...], fn: Callable[[Any], None], *, wire: bool = False) -> Unsubscribe:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not kinds or not all(isinstance(k, type) for k in kinds):
            raise TypeError(f"subscribe() takes a record class or a tuple of them, not {kind!r}")
        sub = _Subscription(kinds, fn, wire)
        with self._lock:
            self._subs = (*self._subs, sub)

        def unsubscribe() -> None:
            with self._lock:
                self._subs = tuple(s for s in self._subs if s is not sub)

        return unsubscribe

    def subscribers(self, kind: type) -> int:
        """How many subscriptions take records of `kind` (for tests and status)."""
        return sum(1 for s in self._subs if issubclass(kind, s.kinds))

    def publish(self, record: Any) -> None:
        """Hand `record` to every subscriber of its kind; from any thread, never waits on I/O itself."""
        pending: deque | None = getattr(self._local, "pending", None)
        if pending is not None:  # inside a delivery on this thread: after the current record
            pending.append(record)
            return
        pending = self._local.pending = deque([record])
        try:
            while pending:
                self._deliver(pending.popleft())
        finally:
            self._local.pending = None

    def _deliver(self, record: Any) -> None:
        wire: Message | None = None
        for sub in self._subs:
            if not isinstance(record, sub.kinds):
                continue
            try:
                if sub.wire:
                    if wire is None:
                        wire = record.to_message()
                    sub.fn(wire)
                else:
                    sub.fn(record)
            except Exception:
                self.failures += 1
                log.exception("bus subscriber %r failed on a %s", sub.fn, type(record).__name__)
