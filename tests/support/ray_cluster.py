"""A real dfstream cluster on loopback for tests and the benchmark: `dfstream cluster head`, workers and a
`serve --ray` gateway as child processes, each in its own process group, with Ray's temp dir per cluster.

Every process is stopped by its own group id (the CLI's, and the Ray group each CLI prints), never by name.
`kill_worker` is a machine loss: SIGKILL to the worker command and its whole Ray process group at once.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]  # on the children's PYTHONPATH: `support.cluster_fakes`
START_TIMEOUT_S = 120.0
RAY_GROUP = re.compile(r"Ray process group (\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_unavailable() -> str | None:
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        return f"ray is not installed ({exc}); pip install '.[cluster]'"
    return None


class Proc:
    """One `python -m stream ...` child with its output in a file and a line-watcher."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.log = args, log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "stream", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._out.write(line)
            self._out.flush()
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT_S) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if m := rx.search(line):
                        return m
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.args[:2]} exited {self.proc.returncode}:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.args[:2]}: no {pattern!r} within {timeout} s:\n{self.tail()}")
                self._cond.wait(min(left, 0.5))

    def tail(self, n: int = 40) -> str:
        return "".join(self.lines[-n:])

    @property
    def groups(self) -> list[int]:
        found = [int(m.group(1)) for line in self.lines if (m := RAY_GROUP.search(line))]
        return [self.proc.pid, *found]

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill_tree(self) -> None:
        """SIGKILL the command and every Ray process it started, at once (a machine loss)."""
        for g in self.groups:
            try:
                os.killpg(g, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        for g in self.groups:  # whatever is left, by group id
            try:
                os.killpg(g, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._out.close()


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # Ray's socket paths must stay short (AF_UNIX limit): its temp dir is not under pytest's tmp_path
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
        self.port = free_port()
        self.address: str | None = None
        self.procs: list[Proc] = []
        self._n = 0

    def env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(RAY_TMPDIR=str(self.ray_tmp), DFSTREAM_DATA=str(self.workdir / f"data-{name}"),
                   PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]), OMP_NUM_THREADS="1",
                   RAY_USAGE_STATS_ENABLED="0")
        return env

    def _start(self, name: str, args: list[str]) -> Proc:
        proc = Proc(args, self.env(name), self.workdir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def head(self, cameras: int = 0, redis: str | None = None, name: str = "head",
             timeout: float = START_TIMEOUT_S) -> Proc:
        """`dfstream cluster head` (with `redis`: its state kept there, so the same call after a `kill_tree`
        resumes the cluster; give the restart another `name` for its log, and the `timeout` of its retries)."""
        proc = self._start(name, ["cluster", "head", "--port", str(self.port), "--num-cpus", "1",
                                  "--object-store-mb", "100", "--cameras", str(cameras),
                                  *(["--redis", redis] if redis else [])])
        self.address = proc.wait_for(r"address (\S+:\d+)", timeout).group(1)
        return proc

    def worker(self, cameras: int) -> Proc:
        self._n += 1
        proc = self._start(f"worker{self._n}", ["cluster", "worker", "--address", str(self.address), "--cameras",
                                                str(cameras), "--num-cpus", "1", "--object-store-mb", "100"])
        proc.wait_for(r"Ray runtime started")  # registered with the head: the director sees it
        return proc

    def node_name(self, worker: Proc) -> str:
        return worker.wait_for(r"node (dfstream-[0-9a-f]+)").group(1)

    def gateway(self, args: list[str], name: str = "gateway") -> Proc:
        proc = self._start(name, ["serve", "--ray", str(self.address), *args])
        proc.wait_for(r"open http://")
        return proc

    def status(self, *, text: bool = False) -> dict | str:
        """`dfstream cluster status` (the JSON form, parsed, unless `text`)."""
        import json

        out = subprocess.run([sys.executable, "-m", "stream", "cluster", "status", "--address", str(self.address),
                              *([] if text else ["--json"])], cwd=REPO, env=self.env("status"), capture_output=True,
                             text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"cluster status failed: {out.stdout}{out.stderr}")
        return out.stdout if text else json.loads(out.stdout[out.stdout.index("{"):])

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
