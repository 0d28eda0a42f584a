"""Alert channels that subscribe to the bus: signed webhooks (webhook.py) and MQTT (mqtt.py).

Each channel is a `SpooledChannel` (stream.live.bus.sender): its `publish` only appends to its sender's queue, and
its sender's thread does the network and disk work, so a slow or dead receiver holds back neither the pipeline nor
another channel. `ChannelError` and the `Channel` interface live in base.py. paho-mqtt is imported only when an
`mqtt:` section asks for it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from stream.config.channels import MqttConfig, WebhookConfig
from stream.live.bus.channels.base import Channel, ChannelError
from stream.live.bus.channels.webhook import WEBHOOKS_DIR, WebhookChannel, read_secret
from stream.messages import Message

log = logging.getLogger(__name__)


class Channels:
    """The configured channels: built and closed together; each subscribes to the bus on its own (`all`)."""

    def __init__(self, webhooks: list[WebhookChannel], mqtt: Channel | None = None) -> None:
        self.webhooks = webhooks
        self.mqtt = mqtt

    @property
    def all(self) -> list[Channel]:
        return [*self.webhooks, *([self.mqtt] if self.mqtt is not None else [])]

    def __bool__(self) -> bool:
        return bool(self.all)

    def publish(self, msg: Message) -> None:
        """Hand one wire message to every channel (without a bus: tests, tools); each keeps what it wants."""
        for channel in self.all:
            channel.publish(msg)

    def start(self) -> None:
        for channel in self.all:
            channel.start()

    def close(self) -> None:
        """Close every channel at once: each may wait out one delivery in flight (its timeout), and shutdown
        should take the longest of those, not their sum."""
        def close_one(channel: Channel) -> None:
            try:
                channel.close()
            except Exception:
                log.exception("alert channel %s did not close cleanly", channel.name)

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
    hooks: list[WebhookChannel] = []
    try:
        for hook, secret in zip(webhooks, secrets, strict=True):
            hooks.append(WebhookChannel(hook, secret, Path(data_dir) / WEBHOOKS_DIR))
        broker = None
        if mqtt is not None:
            from stream.live.bus.channels.mqtt import MqttChannel

            broker = MqttChannel(mqtt, data_dir, credentials)
    except BaseException:  # a spool held by another serve: release what was opened
        Channels(hooks).close()
        raise
    return Channels(hooks, broker)


__all__ = ["Channel", "ChannelError", "Channels", "open_channels"]
