"""On-disk spool of alerts that could not be delivered to Redis yet.

Why a file and not memory: an alert raised while Redis is down must survive a crash or restart of `serve`
too. Each append is one JSON line, flushed and fsynced before `append` returns, so a line on disk is an alert
that will be replayed. Order is the append order; the bus replays from the head and removes what Redis took.
A crash between Redis accepting an alert and the spool dropping it is harmless: every alert carries an
idempotency key that Redis remembers, so the replay is skipped there.

A lock file (flock) is held for the life of the spool so two `serve` processes cannot interleave one spool;
give each its own data folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from pathlib import Path

from stream.messages import Message, dumps

log = logging.getLogger(__name__)

SPOOL_NAME = "alerts-spool.jsonl"


class SpoolLocked(RuntimeError):
    """Another process holds this spool."""


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # The lock lives in its own file because drop_head() replaces the data file (a new inode).
        self._lock_file = open(self.path.with_name(self.path.name + ".lock"), "a")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolLocked(f"{self.path} is in use by another process; give each serve its own data folder")
        self._entries, clean = self._read()
        if not clean:  # never append after a torn line: rewrite the readable entries first
            self._replace_file(self._entries)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held until close()

    def _read(self) -> tuple[list[Message], bool]:
        """Entries left by an earlier run, and whether the file was clean. A torn last line (a crash
        mid-append) was never acknowledged to anyone, so it is dropped."""
        if not self.path.exists():
            return [], True
        text = self.path.read_text(encoding="utf-8", errors="replace")
        clean = not text or text.endswith("\n")
        entries: list[Message] = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                clean = False
                log.warning("%s:%d: unreadable spool line skipped", self.path, number)
        if entries:
            log.info("%s: %d alert(s) left by an earlier run will be replayed", self.path, len(entries))
        return entries, clean

    def _replace_file(self, entries: list[Message]) -> None:
        """Write `entries` beside the spool, fsync, and atomically rename over it."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(dumps(m) + "\n" for m in entries))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def append(self, msg: Message) -> None:
        """Durably add one alert at the tail (returns after fsync)."""
        line = dumps(msg) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._entries.append(msg)

    def entries(self) -> list[Message]:
        """A copy of the spooled alerts, oldest first."""
        with self._lock:
            return list(self._entries)

    def drop_head(self, count: int) -> None:
        """Remove the first `count` alerts (delivered). Crash-safe: the file is either the old or the new list."""
        with self._lock:
            rest = self._entries[count:]
            if rest:
                self._file.close()
                self._replace_file(rest)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            else:  # everything delivered: an empty file is the new (and only) state
                self._file.truncate(0)
                self._file.flush()
                os.fsync(self._file.fileno())
            self._entries = rest

    def clear(self) -> None:
        self.drop_head(len(self._entries))

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()
            if not self._lock_file.closed:
                self._lock_file.close()  # releases the flock


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
