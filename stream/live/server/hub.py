"""Websocket fan-out. Each client has its own outbox: overlays and status are lossy (a slow client loses the
oldest), alerts are never dropped, and nothing a client does can slow the pipeline or another client.

A client may send at most `rate` messages per second (a token bucket holding twice that); the handler refuses
the rest with an error reply, and closes a client that keeps flooding (`RateLimit`).

A client that connects late (a page opened or reloaded while a face is already flagged) is first sent the latest
message of every open alert and of the most recent ended ones, so an alert feed never depends on when it was opened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from typing import Any

from stream.messages import dumps, is_alert, is_lossy

log = logging.getLogger(__name__)

LOSSY_BACKLOG = 32  # overlay/status messages a client may lag behind before the oldest are dropped
ENDED_ALERTS_REPLAYED = 50  # ended alerts a newly connected client is sent (open ones are always sent)
RATE_BURST_FACTOR = 2.0  # a client may send this many seconds' worth of messages at once
FLOOD_REFUSALS = 200  # refused messages in a row (none allowed between) after which the client is closed


class RateLimit:
    """A token bucket: `allow()` is True for at most `rate` messages per second, after a burst of
    `RATE_BURST_FACTOR * rate`."""

    def __init__(self, rate: float, clock=time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * RATE_BURST_FACTOR)
        self.tokens = self.capacity
        self.refused = 0  # in a row
        self.refused_total = 0
        self._clock = clock
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.refused = 0
            return True
        self.refused += 1
        self.refused_total += 1
        return False

    @property
    def flooding(self) -> bool:
        return self.refused >= FLOOD_REFUSALS


class Client:
    def __init__(self, send, streams: set[str] | None = None, rate: float | None = None) -> None:
        self._send = send  # async callable(str)
        self.limit = RateLimit(rate) if rate else None
        self.streams = streams  # None: every stream
        self.lossy: deque[str] = deque(maxlen=LOSSY_BACKLOG)
        self.reliable: deque[str] = deque()
        self.dropped = 0
        self._wake = asyncio.Event()
        self.closed = False

    def wants(self, msg: dict[str, Any]) -> bool:
        return self.streams is None or msg.get("stream") in self.streams or msg.get("stream") is None

    def enqueue(self, msg: dict[str, Any], text: str) -> None:
        if is_lossy(msg):
            if len(self.lossy) == self.lossy.maxlen:
                self.dropped += 1
            self.lossy.append(text)
        else:
            self.reliable.append(text)
        self._wake.set()

    async def pump(self) -> None:
        """Send queued messages in order of importance until the client goes away."""
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            while self.reliable or self.lossy:
                text = self.reliable.popleft() if self.reliable else self.lossy.popleft()
                await self._send(text)


class AlertReplay:
    """The latest message of each alert, in order of first appearance: every open alert, and the last
    `ended_kept` ended ones."""

    def __init__(self, ended_kept: int = ENDED_ALERTS_REPLAYED) -> None:
        self.ended_kept = ended_kept
        self._latest: OrderedDict[str, tuple[dict[str, Any], str]] = OrderedDict()

    def record(self, msg: dict[str, Any], text: str) -> None:
        alert_id = msg.get("id")
        if not alert_id:
            return
        self._latest[alert_id] = (msg, text)  # keeps its place: ordered by the alert's first message
        ended = [i for i, (m, _) in self._latest.items() if m.get("event") == "end"]
        for old in ended[: max(0, len(ended) - self.ended_kept)]:
            del self._latest[old]

    def messages(self) -> list[tuple[dict[str, Any], str]]:
        return list(self._latest.values())


class Hub:
    def __init__(self, ended_alerts_replayed: int = ENDED_ALERTS_REPLAYED) -> None:
        self.clients: set[Client] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.replay = AlertReplay(ended_alerts_replayed)
        self.departed_dropped = 0  # messages dropped for clients that have since left (for the metrics)
        self.departed_refused = 0  # messages refused by the rate limit, likewise

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def join(self, client: Client) -> None:
        """Add a client and queue the alerts it missed; call on the event loop's thread."""
        for msg, text in self.replay.messages():
            if client.wants(msg):
                client.enqueue(msg, text)
        self.clients.add(client)

    def leave(self, client: Client) -> None:
        """Forget a client (its counters stay in the hub's totals); call on the event loop's thread."""
        if client in self.clients:
            self.clients.discard(client)
            self.departed_dropped += client.dropped
            self.departed_refused += client.limit.refused_total if client.limit else 0

    def dropped_total(self) -> int:
        """Lossy messages dropped for slow clients since the start, departed clients included."""
        return self.departed_dropped + sum(c.dropped for c in list(self.clients))

    def refused_total(self) -> int:
        """Client messages refused by the rate limit since the start."""
        return self.departed_refused + sum(c.limit.refused_total for c in list(self.clients) if c.limit)

    def publish(self, msg: dict[str, Any]) -> None:
        """Deliver to every subscribed client; call on the event loop's thread."""
        text = dumps(msg)
        if is_alert(msg):
            self.replay.record(msg, text)
        for client in list(self.clients):
            if client.wants(msg):
                client.enqueue(msg, text)

    def publish_threadsafe(self, msg: dict[str, Any]) -> None:
        """A wire message from any thread: the bus's subscription (its publishers' threads) and the cluster
        gateway's Redis readers."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.publish, msg)
