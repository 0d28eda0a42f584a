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

from support.subprocess_server import HOST, SubprocessServer, free_port  # noqa: F401  (free_port: tests import it here)

BINARY = "redis-server"
START_TIMEOUT_S = 10.0


def unavailable_reason() -> str | None:
    """None when redis-server can be run, else why not (for pytest.skip)."""
    if shutil.which(BINARY) is None:
        return f"{BINARY} is not on PATH (Debian package redis-server; scripts/setup.sh installs it)"
    return None


def ping(port: int, timeout: float = 0.5, tls=None) -> bool:
    """True when a Redis on `port` answers PING (RESP inline command, no client library needed); one that wants
    a password answers NOAUTH, which is as alive. With `tls` (a Pki), over TLS with its client certificate."""
    import socket

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


class RedisServer(SubprocessServer):
    name = BINARY
    start_timeout_s = START_TIMEOUT_S

    def __init__(self, persistent: bool = False, port: int | None = None, password: str | None = None, tls=None,
                 client_certs: bool = False) -> None:
        super().__init__(port)
        self.persistent = persistent
        self.password = password
        self.tls = tls
        self.client_certs = client_certs

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{HOST}:{self.port}/0"

    def command(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        listen = ["--port", str(self.port)]
        if self.tls:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.server_cert),
                      "--tls-key-file", str(self.tls.server_key), "--tls-ca-cert-file", str(self.tls.ca),
                      "--tls-auth-clients", "yes" if self.client_certs else "no"]
        if self.password:
            listen += ["--requirepass", self.password]
        return [BINARY, *listen, "--bind", HOST, "--save", "", *persistence,
                "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]

    def answers(self) -> bool:
        return ping(self.port, tls=self.tls)

    def log_tail(self, lines: int = 20) -> str:
        log = self.workdir / "redis.log"
        return "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
