"""The in-process bus, `serve`'s default: nothing to install or run besides the server itself."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stream.live.bus.base import ALERTS_LOG_NAME, AlertLog, Bus
from stream.messages import Message, is_alert

log = logging.getLogger(__name__)

Callback = Callable[[Message], None]


class LocalBus(Bus):
    """Forwards every message to callbacks (the websocket hub's `publish_threadsafe`) and appends every alert to
    `data_dir/alerts.jsonl`, the pipeline's own log that `dfstream alerts` reads when there is no Redis.

    Callbacks must be non-blocking (the hub only schedules work on its loop). One failing callback is logged
    and does not stop the others or the log.
    """

    def __init__(self, callbacks: Sequence[Callback] = (), data_dir: Path | None = None) -> None:
        self.callbacks = list(callbacks)
        self.alert_log = AlertLog(Path(data_dir) / ALERTS_LOG_NAME) if data_dir is not None else None
        self.alerts = 0

    def add_callback(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    def publish(self, msg: Message) -> None:
        if is_alert(msg):
            self.alerts += 1
            if self.alert_log is not None:
                try:
                    self.alert_log.append(msg)
                except (OSError, ValueError):
                    log.exception("cannot append alert %s to %s", msg.get("key"), self.alert_log.path)
        for callback in self.callbacks:
            try:
                callback(msg)
            except Exception:
                log.exception("bus callback %r failed", callback)

    def close(self) -> None:
        if self.alert_log is not None:
            self.alert_log.close()

    def stats(self) -> dict[str, Any]:
        return {"alerts": self.alerts}
