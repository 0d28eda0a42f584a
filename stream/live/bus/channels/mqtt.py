"""MQTT, Frigate's way, with paho-mqtt: what home and building automation subscribes to.

Topics (prefix `dfstream` by default):
- `<prefix>/events`: every alert message (start / update / end, the JSON `dfstream alerts --json` prints), QoS 1;
- `<prefix>/<stream>/verdict`: the stream's current verdict (`real`, `uncertain`, `fake`, or `none`
  without a tracked face), retained;
- `<prefix>/<stream>/status`: the stream's source state (`streaming`, `reconnecting`, `stopped`, ...), retained;
- `<prefix>/available`: `online` once connected, `offline` at shutdown and, as the last will, when serve dies.

Why a spool for events: alerts are durable (messages.py). The channel's `SpooledSender` (stream.live.bus.sender)
appends each to an fsynced spool on the channel's thread, and `deliver` sends the head and waits for the broker's
acknowledgement (PUBACK) before the next, so a broker that is down, restarted or slow gets them later, in order,
and a restart of `serve` keeps them. At-least-once: a crash between the PUBACK and the removal sends one again;
the message's `key` tells a subscriber it has seen it. An event sent but not yet acknowledged when the connection
drops is resent by paho itself after reconnecting; `deliver` waits for that one rather than publishing it twice.

Why only the latest verdict and status: they are states, not events. A newer one supersedes the older, so only
the latest per topic is kept, published when it changes while connected, and all are published again on every
(re)connect, which also restores the retained topics of a broker that lost them.

Threads: paho runs its network loop on its own thread (`loop_start`) and reconnects by itself; its callbacks only
flip the connection flag, republish the states and wake the sender. The sender's thread makes every other call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from stream.config.channels import MqttConfig
from stream.config.sources import Backoff
from stream.live.bus.credentials import Credentials, check_tls_files
from stream.live.bus.credentials import read_credentials as read_credentials_from_env
from stream.live.bus.sender import SenderPolicy, SpooledChannel, SpooledSender
from stream.messages import OVERLAY, STATUS, WIRE, Message, dumps, is_alert

log = logging.getLogger(__name__)

SPOOL_NAME = "mqtt-events.jsonl"  # under data_dir
KEEPALIVE_S = 30  # the broker sends the last will this long (x1.5) after a silent, half-open connection
# paho's reconnect delays: from 1 s doubling to 10 s. The cap bounds how late alerts reach a returning broker;
# a lower one only adds connection attempts to a broker that is down.
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 10
PUBACK_WAIT_S = 2.0  # one wait for an event's PUBACK; then the sender backs off and waits again (never resends)
# The spool's head is retried this often while the broker does not take it. A (re)connect wakes the sender at
# once, so the cap only bounds the wait when a connected broker is slow to acknowledge; lower spins more often.
MQTT_RETRY = Backoff(initial_s=0.5, factor=2.0, max_s=5.0, jitter=0.2)
CLOSE_TIMEOUT_S = 3.0  # at shutdown, how long `offline` may take to be acknowledged
ONLINE, OFFLINE = "online", "offline"
# CONNACK codes that mean the user name or password is wrong (MQTT 3.1.1: 4, 5; MQTT 5: 0x86, 0x87)
REFUSED_CREDENTIALS = frozenset({4, 5, 0x86, 0x87})
NO_FACES = "none"  # the verdict topic's value while a stream has no tracked face


def read_credentials(config: MqttConfig, env: dict[str, str] | None = None) -> Credentials:
    """The broker's user and password from their variables, and its TLS files checked: a ChannelError names what
    is missing before anything is opened."""
    credentials = read_credentials_from_env("mqtt", config.username_env, config.password_env, env)
    check_tls_files("mqtt", config)
    return credentials


def default_client_id(data_dir: Path) -> str:
    """Stable for one serve (host + data folder), distinct between two: a broker drops the older of two
    connections with one client id, and two serves sharing one would knock each other off in turn."""
    digest = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"dfstream-{socket.gethostname()}-{digest}"


class MqttChannel(SpooledChannel):
    name = "mqtt"
    kind = "mqtt"
    kinds = WIRE  # alerts as events, overlays and status as the retained verdict and state

    def __init__(self, config: MqttConfig, data_dir: Path, credentials: Credentials | None = None) -> None:
        self.config = config
        prefix = config.topic_prefix.rstrip("/")
        self.events_topic = f"{prefix}/events"
        self.available_topic = f"{prefix}/available"
        self._prefix = prefix
        self.sender = SpooledSender(self, Path(data_dir) / SPOOL_NAME,
                                    SenderPolicy(backoff=MQTT_RETRY, close_timeout_s=PUBACK_WAIT_S + CLOSE_TIMEOUT_S))
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=config.client_id or default_client_id(Path(data_dir)))
        self._credentials = credentials or Credentials()
        if self._credentials.username:
            self.client.username_pw_set(self._credentials.username, self._credentials.password)
        if config.tls:
            self.client.tls_set(ca_certs=_path(config.ca_file), certfile=_path(config.cert_file),
                                keyfile=_path(config.key_file), keyfile_password="")
        self.client.will_set(self.available_topic, OFFLINE, qos=1, retain=True)
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self._lock = threading.Lock()  # the flags and the latest states: paho's thread and the sender's
        self._connected = False
        self._stopping = False
        self._latest: dict[str, str] = {}  # topic -> payload of each stream's verdict and status
        self._pending: tuple[str, mqtt.MQTTMessageInfo] | None = None  # the head's key, sent and awaiting PUBACK
        self.last_error: str | None = None
        self.counters = {"events_sent": 0, "states_sent": 0, "connects": 0}

    @property
    def spool(self):
        return self.sender.spool

    # -- paho's thread -----------------------------------------------------------------------------------------

    def _error(self, error: str) -> None:
        """Keep the latest error; log it once, not at every reconnect attempt."""
        if error != self.last_error:
            log.warning("mqtt %s:%d: %s; events are spooled to %s", self.config.host, self.config.port, error,
                        self.spool.path)
        self.last_error = error

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            refused = f"the broker refused the connection: {reason_code}"
            if reason_code.value in REFUSED_CREDENTIALS:
                refused += f" ({self._credentials.hint()})"
            self._error(refused)
            return
        client.publish(self.available_topic, ONLINE, qos=1, retain=True)
        with self._lock:
            self._connected = True
            self.counters["connects"] += 1
            self.last_error = None
            states = dict(self._latest)
        for topic, payload in states.items():  # the broker may have lost its retained messages
            client.publish(topic, payload, qos=1, retain=True)
            self.counters["states_sent"] += 1
        log.info("mqtt %s:%d: connected; %d spooled event(s) to send", self.config.host, self.config.port,
                 len(self.spool))
        self.sender.wake()

    def _on_connect_fail(self, client, userdata) -> None:
        """paho calls this inside its `except OSError` (TLS included): the exception says why, in words."""
        exc = sys.exc_info()[1]
        self._error(f"cannot connect: {type(exc).__name__}: {exc}" if exc is not None else "cannot connect")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            if self._connected and not self._stopping:
                log.warning("mqtt %s: connection lost (%s); events are spooled to %s", self.config.host,
                            reason_code, self.spool.path)
            was_connected, self._connected = self._connected, False
        if was_connected:  # a refused CONNACK keeps its own, clearer error
            self.last_error = f"disconnected: {reason_code}"

    # -- what the sender asks (its thread) -----------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._connected

    def wants(self, msg: Message) -> bool:
        return is_alert(msg) or (msg.get("type") in (OVERLAY, STATUS) and bool(msg.get("stream")))

    def probe(self) -> str | None:
        return None if self._connected else "not connected"

    def send_lossy(self, msg: Message) -> str | None:
        """Keep the stream's latest verdict or state; publish it (retained) if it changed while connected."""
        stream = msg["stream"]
        if msg.get("type") == OVERLAY:
            topic, payload = f"{self._prefix}/{stream}/verdict", str(msg.get("verdict") or NO_FACES)
        else:
            topic, payload = f"{self._prefix}/{stream}/status", str(msg.get("state") or "")
        with self._lock:
            if not payload or self._latest.get(topic) == payload:
                return None
            self._latest[topic] = payload
            connected = self._connected
        if connected:
            self.client.publish(topic, payload, qos=1, retain=True)
            self.counters["states_sent"] += 1
        return None

    def deliver(self, msg: Message) -> str | None:
        """Send the spool's head and wait for its PUBACK; a head sent before is waited for, never sent again."""
        key = str(msg.get("key"))
        if self._pending is None or self._pending[0] != key:
            if not self._connected:
                return f"not connected ({self.last_error})" if self.last_error else "not connected"
            info = self.client.publish(self.events_topic, dumps(msg), qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                return "paho's outgoing queue is full"
            self._pending = (key, info)
        info = self._pending[1]
        try:
            info.wait_for_publish(PUBACK_WAIT_S)
        except (RuntimeError, ValueError) as exc:  # never queued by paho: send it again once connected
            self._pending = None
            return str(exc)
        if not info.is_published():
            return f"no PUBACK within {PUBACK_WAIT_S:g} s"
        self._pending = None
        self.counters["events_sent"] += 1
        return None

    # -- serve's side ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.config.host, self.config.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()
        self.sender.start()

    def release(self) -> None:
        """After the sender stopped: `offline` (acknowledged, if the broker is there), then disconnect."""
        with self._lock:
            self._stopping = True
            connected = self._connected
        if connected:
            info = self.client.publish(self.available_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(CLOSE_TIMEOUT_S)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    def stats(self) -> dict[str, Any]:
        s = self.sender.stats()
        return {**self.counters, "connected": self._connected, "spool": s["spool"] + s["durable_waiting"],
                "last_error": self.last_error}


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)
