"""A real `redis-server` (Debian's package) on a free loopback port, for the bus tests.

`kill()` is SIGKILL, like a crashed Redis; `restart()` brings it back on the same port. By default nothing is
persisted (`--save '' --appendonly no`), so a restart empties it, as a cache-style Redis would;
`persistent=True` turns on the append-only file with an fsync per write, so a restart keeps every write that
was acknowledged, which lets a test check the alerts stream itself across a crash. With `password` it requires
it (`requirepass`); with `tls` (a tls_certs.Pki) it listens with TLS only (`tls-port`, plain `port 0`) and, with
`client_certs`, also requires a client certificate its CA signed (Redis's default `tls-auth-clients yes`).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
BINARY = "redis-server"
START_TIMEOUT_S = 10.0
PING_INTERVAL_S = 0.02


def unavailable_reason() -> str | None:
    """None when redis-server can be run, else why not (for pytest.skip)."""
    if shutil.which(BINARY) is None:
        return f"{BINARY} is not on PATH (Debian package redis-server; scripts/setup.sh installs it)"
    return None


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def ping(port: int, timeout: float = 0.5, tls=None) -> bool:
    """True when a Redis on `port` answers PING (RESP inline command, no client library needed); one that wants
    a password answers NOAUTH, which is as alive. With `tls` (a Pki), over TLS with its client certificate."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as raw:
            s = raw
            if tls is not None:
                import ssl

                context = ssl.create_default_context(cafile=str(tls.ca))
                context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
                s = context.wrap_socket(raw, server_hostname=HOST)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    def __init__(self, persistent: bool = False, port: int | None = None, password: str | None = None, tls=None,
                 client_certs: bool = False) -> None:
        self.port = port or free_port()
        self.persistent = persistent
        self.password = password
        self.tls = tls
        self.client_certs = client_certs
        self.workdir = Path(tempfile.mkdtemp(prefix="dfstream-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        listen = ["--port", str(self.port)]
        if self.tls:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.server_cert),
                      "--tls-key-file", str(self.tls.server_key), "--tls-ca-cert-file", str(self.tls.ca),
                      "--tls-auth-clients", "yes" if self.client_certs else "no"]
        if self.password:
            listen += ["--requirepass", self.password]
        cmd = [BINARY, *listen, "--bind", HOST, "--save", "", *persistence,
               "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ping(self.port, tls=self.tls):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err}{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT_S} s{self.log_tail()}")
            time.sleep(PING_INTERVAL_S)
        return self

    def log_tail(self, lines: int = 20) -> str:
        log = self.workdir / "redis.log"
        return "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save, connections cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
