"""Message buses: how overlays, status and alerts leave the pipeline.

`open_bus(redis_url, data_dir, callbacks)` is what `serve` calls: a LocalBus (websocket hub + alerts log) and,
with `--redis`, a RedisBus in front of it. Redis is imported only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from stream.live.bus.base import ALERTS_LOG_NAME, DATA_ENV, AlertLog, Bus, default_data_dir
from stream.messages import Message
from stream.live.bus.local import LocalBus


def open_bus(redis_url: str | None = None, data_dir: Path | None = None,
             callbacks: Sequence[Callable[[Message], None]] = (), **redis_options) -> Bus:
    """The bus for `serve`: in-process only, or Redis behind the in-process one. Call `start()` on it."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    local = LocalBus(callbacks, data_dir)
    if not redis_url:
        return local
    from stream.live.bus.redis_bus import RedisBus

    return RedisBus(redis_url, local=local, data_dir=data_dir, **redis_options)


__all__ = ["ALERTS_LOG_NAME", "DATA_ENV", "AlertLog", "Bus", "LocalBus", "Message",
           "default_data_dir", "open_bus"]
