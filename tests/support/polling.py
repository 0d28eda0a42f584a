"""Waiting on real processes in tests, and reading what `serve` logged: one copy for the transport tests."""

from __future__ import annotations

import json
import time
from pathlib import Path


def wait_for(cond, timeout: float, what: str, every: float = 0.1):
    """Poll `cond` until it returns something truthy (returned) or `timeout` s pass (AssertionError naming
    `what`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def log_alerts(data_dir: Path) -> list[dict]:
    """Every alert message in a data folder's `alerts.jsonl` (none yet: an empty list)."""
    path = Path(data_dir) / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
