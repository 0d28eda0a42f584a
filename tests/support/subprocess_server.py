"""One harness for the real servers the tests start as child processes (redis-server, Mosquitto, GStreamer's RTSP
server): a process on a free loopback port, started, waited for until it answers, and stopped by its PID.

A server is a small subclass: `command()` (how to start it), `answers()` (is it serving yet) and, where it needs
them, `prepare()` (files written before each start), `stdio()` (its pipes) and `log_tail()` (what it logged, shown
when it fails to start). `kill()` is SIGKILL, like a crash or a power loss; `restart()` brings it back on the same
port; `stop()` also removes its working folder. Never by name: only the process this object started is signalled.
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
POLL_S = 0.02  # between two `answers()` probes while starting


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def listening(port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on the loopback `port`."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


class SubprocessServer:
    """Base of the test servers: subclasses set `name` and `start_timeout_s` and implement `command` and `answers`."""

    name = "server"
    start_timeout_s = 10.0

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"dfstream-{self.name}-"))
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None  # seconds the last start() took until the server answered

    # ---------------------------------------------------------------- what a subclass says

    def command(self) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        """Is the started process serving yet (a ping, a listening port, a ready line)? Called every POLL_S."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Write what the process reads at start (config files); called before every start."""

    def stdio(self) -> dict:
        """The child's standard streams (Popen keyword arguments)."""
        return {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}

    def log_tail(self) -> str:
        """The end of the server's own log, appended to a start failure."""
        return ""

    # ---------------------------------------------------------------- the harness

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.running:
            return self
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)  # again after a stop()
        self.prepare()
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, **self.stdio())
        deadline = t0 + self.start_timeout_s
        while not self.answers():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                err = err.decode(errors="replace") if isinstance(err, bytes) else err
                code = self.proc.returncode
                self.kill()
                raise RuntimeError(f"{self.name} exited with {code}: {err}{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not answer within {self.start_timeout_s} s{self.log_tail()}")
            time.sleep(POLL_S)
        self.startup_s = time.monotonic() - t0
        return self

    def kill(self) -> None:
        """SIGKILL to the PID this object started: no shutdown, no save, connections cut."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe:
                pipe.close()
        self.proc = None

    def restart(self):
        self.kill()
        return self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
