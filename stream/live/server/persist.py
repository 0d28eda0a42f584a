"""Streams added or removed through the API, remembered across restarts in `data_dir/streams.json`.

The file holds two things: the sources added through the API (their full `SourceConfig`), and the names of
config-file sources removed through the API. At start the service runs the config file's sources minus the
removed ones (and minus any an API source of the same name replaces), then the added ones. So the page's Remove
survives a restart, whether the stream came from the API or from the config file.

Every change is written atomically: the new content goes to a temporary file in the same folder, is flushed to
disk, and replaces the old file with one `os.replace`; a crash leaves either the old file or the new one, never
half of one. A file that cannot be read (corrupt, or from a newer version) is set aside as `streams.json.bad`
and the service starts from the config file alone, saying so in the log.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stream.config.sources import SourceConfig

log = logging.getLogger(__name__)

STREAMS_FILE = "streams.json"
VERSION = 1


class StreamStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.added: dict[str, SourceConfig] = {}
        self.removed: set[str] = set()
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(f"not a version-{VERSION} streams file")
            added = [SourceConfig.model_validate(s) for s in data.get("added", [])]
            removed = data.get("removed", [])
            if not isinstance(removed, list) or not all(isinstance(n, str) for n in removed):
                raise ValueError("removed must be a list of names")
        except (OSError, ValueError, ValidationError) as exc:
            bad = self.path.with_name(self.path.name + ".bad")
            log.error("%s cannot be read (%s): set aside as %s; starting from the config file's sources",
                      self.path, str(exc).splitlines()[0], bad.name)
            try:
                os.replace(self.path, bad)
            except OSError:
                pass
            return
        self.added = {s.name: s for s in added}
        self.removed = set(removed)

    def sources(self, configured: list[SourceConfig]) -> list[SourceConfig]:
        """What to start: the config file's sources not removed or replaced, then the API's."""
        with self._lock:
            kept = [s for s in configured if s.name not in self.removed and s.name not in self.added]
            return kept + list(self.added.values())

    def record_add(self, source: SourceConfig) -> None:
        with self._lock:
            self.added[source.name] = source
            self.removed.discard(source.name)
            self._write()

    def record_remove(self, name: str, configured: set[str]) -> None:
        """`name` was removed through the API; `configured` are the config file's source names."""
        with self._lock:
            was_added = self.added.pop(name, None) is not None
            if name in configured:
                self.removed.add(name)
            elif not was_added:
                return  # a webcam or other stream that was never persisted
            self._write()

    def snapshot(self) -> dict[str, Any]:
        return {"version": VERSION, "added": [s.model_dump(mode="json") for s in self.added.values()],
                "removed": sorted(self.removed)}

    def _write(self) -> None:
        """Temp file in the same folder, fsync, rename over the old one, fsync the folder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.snapshot(), indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        try:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
