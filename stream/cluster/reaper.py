"""The alert reaper: alerts a lost node left open are ended, with reason "worker-lost".

It follows the cluster's alert stream (the Redis bus's `AlertStreamReader`, in the pipeline's namespace: the one
the nodes publish under) and keeps the latest message of every open alert with the bus source it came from. Once
a node is lost (`lost(source)`), each `step` sends an `end` for every alert still open from that source. A retry
reuses the key (id:seq+1), so Redis's idempotency claim keeps it to one message, and the end read back from the
stream closes the alert here too.

Runs on the director's event loop, one `step` per reconcile round; Redis errors are logged and retried next round.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from stream.live.bus.redis_alerts import AlertStreamReader
from stream.live.bus.redis_bus import UNREACHABLE
from stream.messages import Alert, Message

log = logging.getLogger(__name__)

WORKER_LOST = "worker-lost"
READ_COUNT = 1000  # alert-stream entries read per step
# A lost node's bus source is remembered this long: its alerts were ended long before. Longer only keeps a few
# strings; shorter could forget a source while an alert of it is still to be read back.
LOST_KEPT_S = 3600.0


class AlertReaper:
    def __init__(self, reader: AlertStreamReader, send: Callable[[Message], None]) -> None:
        """`send`: the director's Redis bus (`RedisBus.publish`), which adds its own source and the claim."""
        self.reader = reader
        self.send = send
        self.open: dict[str, tuple[str | None, Alert]] = {}  # alert id -> (its bus source, its latest message)
        self.lost_sources: dict[str, float] = {}  # bus source of a lost node -> when it was lost

    def lost(self, source: str | None) -> None:
        if source:
            self.lost_sources[source] = time.time()

    def step(self) -> int:
        """Read what is new, then end what lost nodes left open; the number of ends sent."""
        try:
            while entries := self.reader.read(READ_COUNT):
                for _, msg in entries:
                    self._seen(msg)
                if len(entries) < READ_COUNT:
                    break
        except UNREACHABLE as exc:
            log.warning("director: cannot read the alert stream: %s", exc)
            return 0
        cutoff = time.time() - LOST_KEPT_S
        self.lost_sources = {s: t for s, t in self.lost_sources.items() if t > cutoff}
        sent = 0
        for source, alert in list(self.open.values()):
            if source in self.lost_sources:
                now = time.time()
                end = dataclasses.replace(alert, event="end", seq=alert.seq + 1, ended_at=now, ts=now,
                                          reason=WORKER_LOST)
                self.send(end.to_message())
                sent += 1
        return sent

    def _seen(self, msg: Message | None) -> None:
        if msg is None:
            return
        try:
            alert = Alert.from_message(msg)
        except (KeyError, TypeError, ValueError):
            log.warning("director: unreadable alert %s skipped", msg.get("key"))
            return
        if alert.event == "end":
            self.open.pop(alert.id, None)
        else:
            self.open[alert.id] = (msg.get("source"), alert)
