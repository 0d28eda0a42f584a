"""The pipeline's own alert log, a subscriber of the bus like every other edge.

The bus itself is dispatch.py (in-process, records); its edges, each a subscriber in wire form, are the websocket
hub (server/hub.py), this log, Redis (redis_bus.py) and the alert channels (channels/).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from stream.config.paths import DATA_ENV, default_data_dir  # noqa: F401 - re-exported for the buses
from stream.messages import Message, dumps

log = logging.getLogger(__name__)

ALERTS_LOG_NAME = "alerts.jsonl"  # the pipeline's own append-only record of every alert it raised


class AlertLog:
    """Append-only JSONL of alerts, flushed per line so `dfstream alerts --follow` sees each one at once.

    Not fsynced: it is a record for people and tests, not the durability mechanism (that is each channel's spool).
    Subscribed to the bus's alerts in wire form; a failed write is logged, never raised into the publisher.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the bus's life
        self._lock = threading.Lock()

    def append(self, msg: Message) -> None:
        line = dumps(msg) + "\n"
        with self._lock:
            if self._file.closed:
                return
            try:
                self._file.write(line)
                self._file.flush()
            except OSError:
                log.exception("cannot append alert %s to %s", msg.get("key"), self.path)

    def close(self) -> None:
        with self._lock:
            self._file.close()
