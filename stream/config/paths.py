"""Where `serve` keeps its data: the alert log, the Redis spool, evidence."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "DFSTREAM_DATA"  # overrides the default data folder (alerts log, spool, evidence)


def default_data_dir() -> Path:
    """`$DFSTREAM_DATA`, else `$XDG_DATA_HOME/dfstream`, else `~/.local/share/dfstream`."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "dfstream"
