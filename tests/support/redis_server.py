"""A real `redis-server` (Debian's package) on a free loopback port, for the bus tests.

`kill()` is SIGKILL, like a crashed Redis; `restart()` brings it back on the same port. By default nothing is
persisted (`--save '' --appendonly no`), so a restart empties it, as a cache-style Redis would;
`persistent=True` turns on the append-only file with an fsync per write, so a restart keeps every write that
was acknowledged, which lets a test check the alerts stream itself across a crash.
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


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis on `port` answers PING (RESP inline command, no client library needed)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, persistent: bool = False, port: int | None = None) -> None:
        self.port = port or free_port()
        self.persistent = persistent
        self.workdir = Path(tempfile.mkdtemp(prefix="dfstream-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        cmd = [BINARY, "--port", str(self.port), "--bind", HOST, "--save", "", *persistence,
               "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ping(self.port):
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
