"""One spooled sender: what Redis, the webhooks and MQTT share, written once.

A channel is a `Link`: it says which messages it wants and how it delivers one (and, if it has them, how it sends
a lossy one and how it checks that its far end is back). The sender does the rest:

- `publish(msg)` from any thread appends to an in-memory queue and returns: never a disk write, never the network;
- its one worker thread moves each durable message (an alert) to an fsynced `Spool` (spool.py), then delivers
  from the spool's head, in order, one at a time; a message leaves the spool only once the link took it (at least
  once: the message's `key` lets the far end drop a repeat). Durable first, then delivered: an alert published a
  moment before a crash is on disk, at the price of one fsync per alert (alerts are few: start, update, end);
- lossy messages (overlays, status) go to `link.send_lossy` in their turn and are never stored: past `queue_max`
  waiting, new ones are dropped and counted;
- a failure backs off (`Backoff`: capped and jittered, so many senders failing together do not retry in step;
  its level is the failures in a row, reset only by a success, so a far end that is down is not hammered again
  each time a head is dead-lettered);
- with `max_attempts`, a head that failed that often is moved to the dead-letter file (dead_letters.py: fsynced
  JSONL beside the spool, which `dfstream alerts replay-dead-letters` sends again) so one message the far end
  will never take stops holding back those behind it. Without it (Redis, MQTT:
  their failures are outages, not refusals) a head waits as long as it takes;
- a link that says it is down (`link.up`) with nothing spooled is probed (`link.probe`) on the same back-off, so
  lossy messages flow again once it is back; `wake()` retries at once (MQTT calls it on reconnecting);
- `close()` stops taking, tries the spool once more whatever the back-off says (the far end may be back, and the
  last alerts of a stopping `serve` should not wait for the next run), and leaves what is undelivered on disk.

Threads: `publish`, `wake` and `stats` from any thread; everything else, `Link` calls included, on the worker.
This module is the only one under `stream/live/bus` that keeps a `threading.Condition`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.config.sources import Backoff
from stream.live.bus.dead_letters import DeadLetters
from stream.live.bus.spool import Spool
from stream.messages import Message, is_alert

log = logging.getLogger(__name__)

QUEUE_MAX = 1024  # lossy messages waiting for the worker before new ones are dropped
DELIVER_CHUNK = 100  # spooled messages delivered between two rewrites of the spool file
MAX_LEVEL = 32  # back-off levels counted (the delay is capped long before; the cap keeps factor**level finite)


class Link:
    """What a channel implements. Only `deliver` is required; the defaults suit a channel of durable messages."""

    name = "link"
    kind = "channel"  # the dead-letter record names the channel under this key: {"webhook": "ops", ...}

    @property
    def up(self) -> bool:
        """False once the far end is known to be unreachable (then it is probed until it answers)."""
        return True

    def wants(self, msg: Message) -> bool:
        """Whether `msg` is this channel's at all (filters); asked on the publisher's thread, so quick."""
        return True

    def durable(self, msg: Message) -> bool:
        """Durable messages are spooled and delivered at least once; the others are lossy."""
        return is_alert(msg)

    def deliver(self, msg: Message) -> str | None:
        """Deliver one durable message: None once the far end took it, else why not, in words."""
        raise NotImplementedError

    def send_lossy(self, msg: Message) -> str | None:
        """Send (or drop, and count) one lossy message; an error says the far end is unreachable."""
        return None

    def probe(self) -> str | None:
        """Whether the far end answers again (None: it does)."""
        return None

    def release(self) -> None:
        """Release connections, once the worker has stopped."""


@dataclass(frozen=True)
class SenderPolicy:
    """How one channel's sender retries. `max_attempts` None: never give up on a head (outages, not refusals)."""

    backoff: Backoff
    max_attempts: int | None = None
    queue_max: int = QUEUE_MAX
    close_timeout_s: float = 10.0  # longest close() waits for the worker (a delivery in flight) before leaving


class SpooledSender:
    def __init__(self, link: Link, spool_path: Path, policy: SenderPolicy, dead_path: Path | None = None) -> None:
        self.link = link
        self.policy = policy
        self.spool = Spool(spool_path)  # SpoolLocked when another process holds it: nothing else is opened
        self.dead_path = dead_path
        self._queue: deque[Message] = deque()
        self._lossy_queued = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._ended = False  # the worker has returned: what is published now goes straight to the spool
        self._failures = 0  # in a row, whichever message: the back-off level
        self._attempts = 0  # failures of the current head
        self._next_try = 0.0
        self.last_error: str | None = None
        self.dead = DeadLetters(dead_path) if dead_path is not None else None
        self.counters = {"delivered": 0, "failed_attempts": 0, "backlogged": 0,
                         "lossy_dropped": 0}  # lossy_dropped: past queue_max

    # -- any thread ------------------------------------------------------------------------------------------

    def publish(self, msg: Message) -> None:
        if not self.link.wants(msg):
            return
        durable = self.link.durable(msg)
        with self._cond:
            if self._ended:
                if durable:
                    self._keep(msg)  # nobody will send it now: kept for the next run
                return
            if not durable:
                if self._stop or self._lossy_queued >= self.policy.queue_max:
                    self.counters["lossy_dropped"] += 1
                    return
                self._lossy_queued += 1
            self._queue.append(msg)
            self._cond.notify()

    def wake(self) -> None:
        """Retry now, whatever the back-off says (the far end is back)."""
        with self._cond:
            self._next_try = 0.0
            self._cond.notify()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"{self.link.kind}-{self.link.name}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(self.policy.close_timeout_s)
            if self._thread.is_alive():
                log.warning("%s %s: a delivery is still in flight at shutdown; its spool stays on disk",
                            self.link.kind, self.link.name)
                return
        with self._cond:
            self._ended = True
            left = self._take()
        for msg in left:
            if self.link.durable(msg):
                self._keep(msg)
        self.spool.close()
        self.link.release()

    def stats(self) -> dict[str, Any]:
        spooled = len(self.spool)  # outside _cond: publish() never waits behind a spool fsync
        with self._cond:
            durable_waiting = len(self._queue) - self._lossy_queued
            counters = dict(self.counters)
        return {**counters, "dead_letters": self.dead.count() if self.dead is not None else 0,  # replays remove
                "spool": spooled, "queued": len(self._queue), "durable_waiting": durable_waiting,
                "last_error": self.last_error}

    # -- the worker ------------------------------------------------------------------------------------------

    def _take(self) -> list[Message]:
        batch = list(self._queue)
        self._queue.clear()
        self._lossy_queued = 0
        return batch

    def _due(self) -> bool:
        return time.monotonic() >= self._next_try and (len(self.spool) > 0 or not self.link.up)

    def _pending(self) -> bool:
        return len(self.spool) > 0 or not self.link.up

    def _run(self) -> None:
        error = self.link.probe()  # learn at once whether the far end answers
        if error is not None:
            self._failed(error, delivery=False)
        while True:
            with self._cond:
                while not self._queue and not self._stop and not self._due():
                    self._cond.wait(max(0.0, self._next_try - time.monotonic()) if self._pending() else None)
                batch, stopping = self._take(), self._stop
            self._absorb(batch)
            if stopping:
                self._deliver_spool(final=True)
                return
            if self._due():
                if len(self.spool):
                    self._deliver_spool()
                else:
                    error = self.link.probe()
                    self._succeeded() if error is None else self._failed(error, delivery=False)

    def _absorb(self, batch: list[Message]) -> None:
        """Durable messages to the spool (fsync, outside _cond), lossy ones to the link."""
        for msg in batch:
            if self.link.durable(msg):
                if self._failures or len(self.spool):
                    self.counters["backlogged"] += 1  # it waits behind a far end that is failing, or a backlog
                self._keep(msg)
            else:
                error = self.link.send_lossy(msg)
                if error is not None:
                    self._failed(error, delivery=False)

    def _keep(self, msg: Message) -> None:
        try:
            self.spool.append(msg)
        except (OSError, ValueError):  # ValueError: the spool is closed
            log.exception("%s %s: CANNOT SPOOL %s; it is only in the alerts log", self.link.kind, self.link.name,
                          msg.get("key"))

    def _deliver_spool(self, final: bool = False) -> None:
        """From the head, in order, until the spool is empty or a delivery fails (then back off)."""
        while entries := self.spool.entries()[:DELIVER_CHUNK]:
            done = 0
            try:
                for msg in entries:
                    error = self.link.deliver(msg)
                    if error is None:
                        done += 1
                        self.counters["delivered"] += 1
                        self._succeeded()
                        continue
                    self._failed(error)
                    self._attempts += 1
                    if self.policy.max_attempts is not None and self._attempts >= self.policy.max_attempts:
                        self._dead_letter(msg, error)
                        done += 1
                        self._attempts = 0
                    elif not final and (self.policy.max_attempts or self._attempts == 1):  # an outage: once
                        log.warning("%s %s: delivery of %s failed (%s), attempt %d%s; retrying in %.1f s",
                                    self.link.kind, self.link.name, msg.get("key"), error, self._attempts,
                                    f"/{self.policy.max_attempts}" if self.policy.max_attempts else "",
                                    max(0.0, self._next_try - time.monotonic()))
                    return
            finally:
                if done:
                    self.spool.drop_head(done)

    def _succeeded(self) -> None:
        if self._failures:
            log.info("%s %s: the far end answers again", self.link.kind, self.link.name)
        self._failures, self._attempts, self._next_try, self.last_error = 0, 0, 0.0, None

    def _failed(self, error: str, delivery: bool = True) -> None:
        """Back off; `delivery`: a durable message's delivery failed (counted), else a probe or a lossy send."""
        self.counters["failed_attempts"] += delivery
        self.last_error = error
        delay = self.policy.backoff.delay(min(self._failures, MAX_LEVEL))
        self._failures += 1
        self._next_try = time.monotonic() + delay

    def _dead_letter(self, msg: Message, error: str) -> None:
        record = {"dead_at": time.time(), "attempts": self._attempts, "error": error, self.link.kind: self.link.name,
                  "msg": msg}
        if self.dead is None:
            log.error("%s %s: %s dropped after %d failed attempts (%s)", self.link.kind, self.link.name,
                      msg.get("key"), self._attempts, error)
            return
        self.dead.append(record)
        log.error("%s %s: %s moved to %s after %d failed attempts (%s)", self.link.kind, self.link.name,
                  msg.get("key"), self.dead_path, self._attempts, error)


class SpooledChannel(Link):
    """A link that owns its sender: what `serve` starts, publishes to (wire form), reads stats of, and closes."""

    sender: SpooledSender

    def publish(self, msg: Message) -> None:
        self.sender.publish(msg)

    def start(self) -> None:
        self.sender.start()

    def close(self) -> None:
        self.sender.close()
