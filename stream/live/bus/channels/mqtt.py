"""MQTT, Frigate's way, with paho-mqtt: what home and building automation subscribes to.

Topics (prefix `dfstream` by default):
- `<prefix>/events`: every alert message (start / update / end, the JSON `dfstream alerts --json` prints), QoS 1;
- `<prefix>/<stream>/verdict`: the stream's current verdict (`real`, `uncertain`, `fake`, or `none`
  without a tracked face), retained;
- `<prefix>/<stream>/status`: the stream's source state (`streaming`, `reconnecting`, `stopped`, ...), retained;
- `<prefix>/available`: `online` once connected, `offline` at shutdown and, as the last will, when serve dies.

Why a spool for events: alerts are durable (messages.py). Each is appended to an fsynced `Spool` on this
channel's thread and leaves it only once the broker acknowledged it (PUBACK), one at a time, so a broker that is
down, restarted or slow gets them later, in order, and a restart of `serve` keeps them. At-least-once: a crash
between the PUBACK and the removal sends one again; the message's `key` tells a subscriber it has seen it.

Why only the latest verdict and status: they are states, not events. A newer one supersedes the older, so
while the broker is away only the latest per stream is kept, and all are published again on every (re)connect,
which also restores the retained topics of a broker that lost them.

paho runs its network loop on its own thread (`loop_start`) and reconnects by itself; this channel's thread
never blocks the pipeline, whose `publish` only appends to a deque.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections import deque
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from stream.config.channels import MqttConfig
from stream.live.bus.spool import Spool
from stream.live.bus.channels.webhook import ChannelError
from stream.messages import OVERLAY, STATUS, Message, dumps, is_alert

log = logging.getLogger(__name__)

SPOOL_NAME = "mqtt-events.jsonl"  # under data_dir
KEEPALIVE_S = 30  # the broker sends the last will this long (x1.5) after a silent, half-open connection
# paho's reconnect delays: from 1 s doubling to 10 s. The cap bounds how late alerts reach a returning broker;
# a lower one only adds connection attempts to a broker that is down.
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 10
PUBACK_POLL_S = 0.2  # how often the thread re-checks an event awaiting its PUBACK (also wakes on on_publish)
CLOSE_TIMEOUT_S = 3.0  # at shutdown, how long `offline` may take to be acknowledged
ONLINE, OFFLINE = "online", "offline"
NO_FACES = "none"  # the verdict topic's value while a stream has no tracked face


def read_credentials(config: MqttConfig, env: dict[str, str] | None = None) -> tuple[str | None, str | None]:
    env = os.environ if env is None else env
    user = password = None
    if config.username_env:
        user = env.get(config.username_env)
        if not user:
            raise ChannelError(f"mqtt: environment variable {config.username_env} (username_env) is not set")
    if config.password_env:
        password = env.get(config.password_env)
        if password is None:
            raise ChannelError(f"mqtt: environment variable {config.password_env} (password_env) is not set")
    return user, password


def default_client_id(data_dir: Path) -> str:
    """Stable for one serve (host + data folder), distinct between two: a broker drops the older of two
    connections with one client id, and two serves sharing one would knock each other off in turn."""
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"dfstream-{socket.gethostname()}-{digest}"


class MqttChannel:
    name = "mqtt"

    def __init__(self, config: MqttConfig, data_dir: Path, username: str | None = None,
                 password: str | None = None) -> None:
        self.config = config
        prefix = config.topic_prefix.rstrip("/")
        self.events_topic = f"{prefix}/events"
        self.available_topic = f"{prefix}/available"
        self._prefix = prefix
        self.spool = Spool(Path(data_dir) / SPOOL_NAME)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=config.client_id or default_client_id(Path(data_dir)))
        if username:
            self.client.username_pw_set(username, password)
        if config.tls:
            self.client.tls_set()
        self.client.will_set(self.available_topic, OFFLINE, qos=1, retain=True)
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self._incoming: deque[Message] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._connected = False
        self._thread: threading.Thread | None = None
        self._latest: dict[str, str] = {}  # topic -> payload of each stream's verdict and status
        self._dirty: set[str] = set()  # topics whose latest payload the broker has not been sent yet
        self._pending: mqtt.MQTTMessageInfo | None = None  # the spool's head, sent and awaiting its PUBACK
        self.last_error: str | None = None
        self.counters = {"events_sent": 0, "states_sent": 0, "connects": 0}

    # -- paho's thread -----------------------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.warning("mqtt %s: %s", self.config.host, self.last_error)
            return
        client.publish(self.available_topic, ONLINE, qos=1, retain=True)
        with self._cond:
            self._connected = True
            self.counters["connects"] += 1
            self.last_error = None
            self._dirty = set(self._latest)  # the broker may have lost its retained messages
            self._cond.notify()
        log.info("mqtt %s:%d: connected; %d spooled event(s) to send", self.config.host, self.config.port,
                 len(self.spool))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            if self._connected and not self._stop:
                log.warning("mqtt %s: connection lost (%s); events are spooled to %s", self.config.host,
                            reason_code, self.spool.path)
            self._connected = False
            self.last_error = f"disconnected: {reason_code}"

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self._cond.notify()

    # -- the pipeline's side -----------------------------------------------------------------------------------

    def publish(self, msg: Message) -> None:
        kind = msg.get("type")
        if is_alert(msg) or kind in (OVERLAY, STATUS):
            with self._cond:
                self._incoming.append(msg)
                self._cond.notify()

    def start(self) -> None:
        if self._thread is not None:
            return
        self.client.connect_async(self.config.host, self.config.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="mqtt-channel", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(CLOSE_TIMEOUT_S + 2)
        with self._cond:
            batch = self._take()
        self._absorb(batch)  # alerts handed over at the very end are kept for the next run
        if self._connected:
            info = self.client.publish(self.available_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(CLOSE_TIMEOUT_S)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self.spool.close()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            incoming = sum(1 for m in self._incoming if is_alert(m))
            return {**self.counters, "connected": self._connected, "spool": len(self.spool) + incoming,
                    "last_error": self.last_error}

    # -- this channel's thread ---------------------------------------------------------------------------------

    def _take(self) -> list[Message]:
        batch = list(self._incoming)
        self._incoming.clear()
        return batch

    def _absorb(self, batch: list[Message]) -> None:
        """Alerts to the spool (fsync, outside _cond); verdicts and states to the latest-per-topic table."""
        for msg in batch:
            if is_alert(msg):
                try:
                    self.spool.append(msg)
                except (OSError, ValueError):
                    log.exception("mqtt: CANNOT SPOOL alert %s; it is only in the alerts log", msg.get("key"))
                continue
            stream = msg.get("stream")
            if not stream:
                continue
            if msg.get("type") == OVERLAY:
                topic, payload = f"{self._prefix}/{stream}/verdict", str(msg.get("verdict") or NO_FACES)
            else:
                topic, payload = f"{self._prefix}/{stream}/status", str(msg.get("state") or "")
            if payload and self._latest.get(topic) != payload:
                with self._cond:
                    self._latest[topic] = payload
                    self._dirty.add(topic)

    def _work_ready(self) -> bool:
        if self._incoming or self._stop:
            return True
        if not self._connected:
            return False
        return bool(self._dirty) or (self._pending is None and len(self.spool) > 0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._work_ready():
                    self._cond.wait(PUBACK_POLL_S if self._pending is not None else None)
                    if self._pending is not None and self._pending.is_published():
                        break
                batch, stopping, connected = self._take(), self._stop, self._connected
                dirty: list[tuple[str, str]] = []
                if connected:
                    dirty = [(t, self._latest[t]) for t in self._dirty]
                    self._dirty.clear()
            self._absorb(batch)
            if stopping:
                return
            if connected:
                for topic, payload in dirty:
                    self.client.publish(topic, payload, qos=1, retain=True)
                    self.counters["states_sent"] += 1
                self._send_events()

    def _send_events(self) -> None:
        """The spool's head, one at a time: the next is sent only after the broker acknowledged the last, so
        order holds across reconnects (paho resends an unacknowledged one itself after reconnecting)."""
        while True:
            if self._pending is not None:
                if not self._pending.is_published():
                    return
                self._pending = None
                self.spool.drop_head(1)
                self.counters["events_sent"] += 1
            if not len(self.spool) or not self._connected:
                return
            info = self.client.publish(self.events_topic, dumps(self.spool.entries()[0]), qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                return
            self._pending = info
