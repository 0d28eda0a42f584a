"""Websocket fan-out. Each client has its own outbox: overlays and status are lossy (a slow client loses the
oldest), alerts are never dropped, and nothing a client does can slow the pipeline or another client."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any

log = logging.getLogger(__name__)

LOSSY_TYPES = frozenset({"overlay", "status"})
LOSSY_BACKLOG = 32  # overlay/status messages a client may lag behind before the oldest are dropped


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
        if msg.get("type") in LOSSY_TYPES:
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


class Hub:
    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def publish(self, msg: dict[str, Any]) -> None:
        """Deliver to every subscribed client; call on the event loop's thread."""
        text = json.dumps(msg, separators=(",", ":"))
        for client in list(self.clients):
            if client.wants(msg):
                client.enqueue(msg, text)

    def publish_threadsafe(self, msg: dict[str, Any]) -> None:
        """For the scheduler and sources, which run on their own threads."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.publish, msg)
