"""A real Mosquitto broker (Debian's `mosquitto`) on a free loopback port, for the MQTT channel tests.

`kill()` is SIGKILL, like a crashed broker; `restart()` brings it back on the same port. With `tls` (a
tls_certs.Pki) it listens with TLS only, and with `users` ({name: password}) it refuses anonymous clients and
checks a password file made by Debian's `mosquitto_passwd`. With `persistent=True`
the broker saves its state (sessions, subscriptions, queued QoS 1 messages) after every change, so a subscriber
with a persistent session keeps receiving across a kill, which lets a test see everything published while it
was reconnecting.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path

from support.subprocess_server import HOST, SubprocessServer, free_port, listening  # noqa: F401  (tests import them here)

BINARY = "mosquitto"
START_TIMEOUT_S = 10.0


def unavailable_reason() -> str | None:
    if shutil.which(BINARY) is None and not Path("/usr/sbin/mosquitto").exists():
        return f"{BINARY} is not installed (Debian package mosquitto; scripts/setup.sh installs it)"
    return None


def binary() -> str:
    return shutil.which(BINARY) or "/usr/sbin/mosquitto"


class MqttBroker(SubprocessServer):
    name = BINARY
    start_timeout_s = START_TIMEOUT_S

    def __init__(self, persistent: bool = False, port: int | None = None, tls=None,
                 users: dict[str, str] | None = None) -> None:
        super().__init__(port)
        self.persistent = persistent
        self.tls = tls
        self.users = users

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{HOST}:{self.port}"

    def log(self) -> str:
        path = self.workdir / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n" + "\n".join(self.log().splitlines()[-lines:])

    def _password_file(self) -> Path:
        path = self.workdir / "passwd"
        path.write_text("")
        for user, password in (self.users or {}).items():
            subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", str(path), user,
                            password], check=True, capture_output=True, timeout=30)
        return path

    def prepare(self) -> None:
        # `user`: run as root, mosquitto would drop to its own user, which cannot read this 0700 folder
        lines = [f"user {getpass.getuser()}", f"listener {self.port} {HOST}",
                 f"allow_anonymous {'false' if self.users else 'true'}", f"log_dest file {self.workdir / 'log'}"]
        if self.users:
            lines.append(f"password_file {self._password_file()}")
        if self.tls:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}", f"keyfile {self.tls.server_key}"]
        if self.persistent:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 1",
                      "autosave_on_changes true"]
        (self.workdir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [binary(), "-c", str(self.workdir / "mosquitto.conf")]

    def answers(self) -> bool:
        return listening(self.port)


class Subscriber:
    """A paho client collecting (topic, payload, retained) in order, on its own network thread."""

    def __init__(self, port: int, topics: str | list[str], client_id: str | None = None,
                 persistent: bool = False, tls=None, user: tuple[str, str] | None = None) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self.topics = [topics] if isinstance(topics, str) else topics
        self.got: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  clean_session=not persistent)
        self.subscribed = threading.Event()  # set at the first SUBACK
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in self.topics])
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.2)  # back at once after a broker restart
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.ca))
        if user is not None:
            self.client.username_pw_set(*user)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.got.append((message.topic, message.payload.decode(), bool(message.retain)))

    def messages(self, topic: str | None = None) -> list[tuple[str, str, bool]]:
        with self.lock:
            return [m for m in self.got if topic is None or m[0] == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
