"""The message bus seen by the pipeline: one `publish(msg)` for overlays, status and alerts.

Why one interface: the scheduler, sources and WebRTC peers publish from their own threads and must not care
whether messages go only to the in-process websocket hub or also to Redis. Overlay and status messages are
lossy (a newer one supersedes them, so dropping is better than delaying the pipeline); alerts are durable
(a security team must receive every one, once), so each implementation documents how it keeps them.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from stream.config.paths import DATA_ENV, default_data_dir  # noqa: F401 - re-exported for the buses
from stream.messages import Message, dumps

log = logging.getLogger(__name__)

ALERTS_LOG_NAME = "alerts.jsonl"  # the pipeline's own append-only record of every alert it raised


class Bus(ABC):
    """Where the pipeline sends its messages. `publish` is thread-safe and never waits on the network."""

    @abstractmethod
    def publish(self, msg: Message) -> None:
        """Hand one message (a dict with "type" and usually "stream") to the bus; returns at once."""

    def start(self) -> None:
        """Start background work (connections, publisher threads). Idempotent."""

    def close(self) -> None:
        """Flush what can be flushed and stop; durable messages not yet delivered stay on disk."""

    def stats(self) -> dict[str, Any]:
        """Counters for status pages and tests."""
        return {}

    def __enter__(self) -> Bus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AlertLog:
    """Append-only JSONL of alerts, flushed per line so `dfstream alerts --follow` sees each one at once.

    Not fsynced: it is a record for people and tests, not the durability mechanism (that is the Redis spool).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the bus's life
        self._lock = threading.Lock()

    def append(self, msg: Message) -> None:
        line = dumps(msg) + "\n"
        with self._lock:
            if not self._file.closed:
                self._file.write(line)
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
