"""Websocket fan-out. Each client has its own outbox: overlays and status are lossy (a slow client loses the
oldest), alerts are never dropped, and nothing a client does can slow the pipeline or another client.

A client that connects late (a page opened or reloaded while a face is already flagged) is first sent the latest
message of every open alert and of the most recent ended ones, so an alert feed never depends on when it was opened.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from typing import Any

from stream.messages import dumps, is_alert, is_lossy

log = logging.getLogger(__name__)

LOSSY_BACKLOG = 32  # overlay/status messages a client may lag behind before the oldest are dropped
ENDED_ALERTS_REPLAYED = 50  # ended alerts a newly connected client is sent (open ones are always sent)


class Client:
    def __init__(self, send, streams: set[str] | None = None) -> None:
        self._send = send  # async callable(str)
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

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def join(self, client: Client) -> None:
        """Add a client and queue the alerts it missed; call on the event loop's thread."""
        for msg, text in self.replay.messages():
            if client.wants(msg):
                client.enqueue(msg, text)
        self.clients.add(client)

    def publish(self, msg: dict[str, Any]) -> None:
        """Deliver to every subscribed client; call on the event loop's thread."""
        text = dumps(msg)
        if is_alert(msg):
            self.replay.record(msg, text)
        for client in list(self.clients):
            if client.wants(msg):
                client.enqueue(msg, text)

    def publish_threadsafe(self, msg: dict[str, Any]) -> None:
        """For the scheduler and sources, which run on their own threads."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.publish, msg)
