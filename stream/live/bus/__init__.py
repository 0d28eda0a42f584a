"""Messages out of the pipeline: one in-process bus of records (dispatch.py) and its edges.

Producers publish frozen records (stream.messages) on a `MessageBus`; every consumer subscribes by kind. The edges
take the wire form: the websocket hub, the alert log (base.py), Redis (redis_bus.py, imported only with
`--redis`), and the alert channels (channels/), the last two through the one spooled sender (sender.py).
"""

from __future__ import annotations

from stream.live.bus.base import ALERTS_LOG_NAME, DATA_ENV, AlertLog, default_data_dir
from stream.live.bus.dispatch import MessageBus, Unsubscribe
from stream.messages import Message

__all__ = ["ALERTS_LOG_NAME", "DATA_ENV", "AlertLog", "Message", "MessageBus", "Unsubscribe", "default_data_dir"]
