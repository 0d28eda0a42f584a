"""One Ray node as a child process: `ray start --block` in the foreground of a `dfstream cluster` command, so
systemd or a container runtime supervises the dfstream command and its signals reach Ray.

Ray's processes (GCS, raylet, workers) all stay in the child's process group, which this module owns: `stop()`
sends that group SIGTERM and, after `STOP_GRACE_S`, SIGKILL, so nothing is left behind and nothing outside the
group is touched (no `ray stop`, which would stop every Ray node on the machine).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from stream.cluster.settings import HEAD_LOSS, STOP_GRACE_S

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # node workers import `stream` and `engines` from here
UP_TIMEOUT_S = 90.0  # Ray waits 30 s (fixed) for its raylet to register, after the GCS has started


class RayStartFailed(RuntimeError):
    """`ray start` exited, or never registered its node."""


def ray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment for a Ray node, with how long its processes wait for a lost head (HEAD_LOSS: Ray reads
    that from the environment only; its system config comes too late for the raylet's own GCS client)."""
    env = {**os.environ, **HEAD_LOSS.env(), **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class RayNode:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RayNode":
        cmd = [sys.executable, "-c", "from ray.scripts.scripts import main; main()", *self.args]
        self.proc = subprocess.Popen(cmd, env=ray_env(self.env), start_new_session=True)
        return self

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_started(self, port: int, timeout: float = UP_TIMEOUT_S) -> None:
        """Until `ray start` has registered its node: it then records the cluster's address in Ray's address
        file (`ray_current_cluster`). RayStartFailed when it exits first or takes longer than `timeout`."""
        from ray._common.utils import get_ray_address_file

        path = Path(get_ray_address_file(None))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RayStartFailed(f"ray start exited with {self.proc.returncode if self.proc else '?'}")
            try:
                if path.read_text().strip().rsplit(":", 1)[-1] == str(port):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RayStartFailed(f"ray start did not register its node within {timeout:.0f} s")

    def wait_for_port(self, host: str, port: int, timeout: float = UP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"ray start exited with {self.proc.returncode if self.proc else '?'}")
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the Ray head did not listen on {host}:{port} within {timeout:.0f} s")

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the whole group, SIGKILL what is left after `grace_s`; the child's exit status."""
        if self.proc is None:
            return None
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(self.proc.pid):
                self.proc.poll()
                time.sleep(0.1)
            if not _group_alive(self.proc.pid):
                break
        try:
            return self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return None


def forget_stale_address(host: str, port: int) -> bool:
    """Remove Ray's record of the last cluster started here (`ray_current_cluster` in its temp dir) when it names
    host:port and nothing listens there: a head that died. `ray start --head` refuses that address while any
    raylet on this machine still names it as its GCS, which is exactly what a worker that outlived the head on
    the same machine does; Ray's own `ray stop` removes the record the same way. True when removed."""
    from ray._common.utils import get_ray_address_file, reset_ray_address

    path = Path(get_ray_address_file(None))
    try:
        recorded = path.read_text().strip()
    except OSError:
        return False
    if recorded.rsplit(":", 1)[-1] != str(port) or listening(host, port):
        return False
    reset_ray_address(None)
    return True


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
