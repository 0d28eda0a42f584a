"""A channel's dead-letter file: the messages its sender gave up on, one fsynced JSON line each
(`{"dead_at", "attempts", "error", "<kind>": name, "msg"}`), until `dfstream alerts replay-dead-letters` sends
them again.

Two processes touch it: a running `serve` appends (its sender's thread) while a replay removes what it delivered.
Both hold one lock file beside it (flock) for each append or rewrite, never across a delivery, so a serve is
never held up by a slow receiver of the replay, and a letter appended during a replay is kept. A rewrite goes to
a temporary file, fsynced, renamed over the old one: a crash leaves either list, whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Letter = dict[str, Any]


class DeadLetters:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._counted: tuple[int, int, int] | None = None  # (inode, size, mtime) of the file last counted
        self._count = 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def append(self, letter: Letter) -> None:
        """Add one letter at the end (returns after fsync)."""
        line = json.dumps(letter, separators=(",", ":"), ensure_ascii=False) + "\n"
        with self._locked(), open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[Letter]:
        """Every readable letter, oldest first (a torn last line, from a crash mid-append, is skipped)."""
        if not self.path.exists():
            return []
        with self._locked():
            return _parse(self.path.read_text(encoding="utf-8", errors="replace"))

    def remove(self, letter: Letter) -> bool:
        """Remove the first letter equal to `letter` (it was delivered); False if it is no longer there."""
        with self._locked():
            if not self.path.exists():
                return False
            letters = _parse(self.path.read_text(encoding="utf-8", errors="replace"))
            try:
                letters.remove(letter)
            except ValueError:
                return False
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("".join(json.dumps(x, separators=(",", ":"), ensure_ascii=False) + "\n" for x in letters))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return True

    def count(self) -> int:
        """How many letters the file holds now (recounted only when the file changed: stats are read often)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return 0
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._counted:
            with open(self.path, "rb") as f:
                self._count = sum(1 for line in f if line.strip())
            self._counted = stamp
        return self._count


def _parse(text: str) -> list[Letter]:
    letters = []
    for line in text.splitlines():
        try:
            letter = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(letter, dict) and isinstance(letter.get("msg"), dict):
            letters.append(letter)
    return letters
