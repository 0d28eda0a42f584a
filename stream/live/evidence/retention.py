"""Evidence retention: beyond `max_alerts` folders, `max_bytes` in all or `max_age_days`, the oldest folders go
first, by modification time. An open alert's folder is never deleted, even if that leaves the store over its
limits for a while (its recording is still being written; it becomes deletable once the alert ends). Every
deletion is logged with why.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Collection
from pathlib import Path

from stream.config.evidence import EvidencePolicy

log = logging.getLogger(__name__)
DAY_S = 86400.0


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def enforce(root: Path, policy: EvidencePolicy, protected: Collection[str] = (), now: float | None = None) -> list[str]:
    """Delete the oldest evidence folders beyond the policy, never those named in `protected`. Returns the names
    deleted, oldest first."""
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    sizes = {p: _size(p) for p in folders}
    total, count = sum(sizes.values()), len(folders)
    deleted = []
    for folder in folders:
        too_old = policy.max_age_days is not None and now - folder.stat().st_mtime > policy.max_age_days * DAY_S
        reason = ("older than max_age_days" if too_old else "over max_alerts" if count > policy.max_alerts
                  else "over max_bytes" if total > policy.max_bytes else None)
        if reason is None:
            break  # within every limit, and every newer folder is younger still
        if folder.name in protected:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total, count = total - sizes[folder], count - 1
        deleted.append(folder.name)
        log.info("evidence %s deleted (%s; %d folders, %d bytes left)", folder.name, reason, count, total)
    return deleted
