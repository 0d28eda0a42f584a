"""Alert channels that subscribe to the bus: signed webhooks (webhook.py) and MQTT (mqtt.py).

Each channel is a bus callback whose `publish` only appends to its own deque; its own thread does the network
and disk work, so a slow or dead receiver holds back neither the pipeline nor another channel. paho-mqtt is
imported only when an `mqtt:` section asks for it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Protocol

from stream.config.channels import MqttConfig, WebhookConfig
from stream.live.bus.channels.webhook import WEBHOOKS_DIR, ChannelError, WebhookChannel, read_secret
from stream.messages import Message

log = logging.getLogger(__name__)


class Channel(Protocol):
    name: str

    def publish(self, msg: Message) -> None: ...
    def start(self) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class Channels:
    """The configured channels as one bus callback; `start`/`close` with the bus."""

    def __init__(self, webhooks: list[WebhookChannel], mqtt: Any | None = None) -> None:
        self.webhooks = webhooks
        self.mqtt = mqtt

    @property
    def all(self) -> list[Any]:
        return [*self.webhooks, *([self.mqtt] if self.mqtt is not None else [])]

    def __bool__(self) -> bool:
        return bool(self.all)

    def publish(self, msg: Message) -> None:
        for channel in self.all:
            try:
                channel.publish(msg)
            except Exception:
                log.exception("alert channel %s failed to take a message", getattr(channel, "name", channel))

    def start(self) -> None:
        for channel in self.all:
            channel.start()

    def close(self) -> None:
        """Close every channel at once: each may wait out one delivery in flight (its timeout), and shutdown
        should take the longest of those, not their sum."""
        def close_one(channel: Any) -> None:
            try:
                channel.close()
            except Exception:
                log.exception("alert channel %s did not close cleanly", getattr(channel, "name", channel))

        threads = [threading.Thread(target=close_one, args=(c,), name=f"close-{c.name}") for c in self.all]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"webhooks": {w.name: w.stats() for w in self.webhooks}}
        if self.mqtt is not None:
            out["mqtt"] = self.mqtt.stats()
        return out


def open_channels(webhooks: list[WebhookConfig], mqtt: MqttConfig | None, data_dir: Path,
                  env: dict[str, str] | None = None) -> Channels:
    """Build (not start) the channels; a secret or credential whose variable is unset raises ChannelError
    before anything is opened, so a bad config changes nothing."""
    secrets = [read_secret(h, env) for h in webhooks]
    credentials = None
    if mqtt is not None:
        from stream.live.bus.channels.mqtt import read_credentials

        credentials = read_credentials(mqtt, env)
    hooks = [WebhookChannel(h, s, Path(data_dir) / WEBHOOKS_DIR) for h, s in zip(webhooks, secrets, strict=True)]
    broker = None
    if mqtt is not None:
        from stream.live.bus.channels.mqtt import MqttChannel

        broker = MqttChannel(mqtt, data_dir, *credentials)
    return Channels(hooks, broker)


__all__ = ["Channel", "ChannelError", "Channels", "open_channels"]
