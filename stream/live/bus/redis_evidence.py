"""An alert's evidence files in Redis, so that whichever node wrote them, the gateway can serve them.

Layout, in the pipeline's `redis_namespace` (every key with the policy's time to live):
* `<ns>:evidence:<alert id>`: a hash, one field per file name: JSON `{"size", "sha256", "chunks", "source",
  "at"}` for a file that is there, or `{"refused": reason, "size", "source"}` for one that is not (over the cap,
  or missing on its node), so the gateway can say why;
* `<ns>:evidence:<alert id>:<file>:<i>`: the i-th `chunk_bytes` of the file.

A file's chunks are written before its hash field, so a field that is there names a whole file; a file already
there with the same sha256 is not written again (a replay after a lost reply). The files of one alert share
`max_alert_bytes`; what would go over it is refused, in the order given (the uploader gives the small files
first). `fetch` reads a file back, checks its sha256 and writes it atomically into a folder; every way it can
fail is a `LookupError` that says why (not uploaded yet, expired or evicted, refused on the node, altered).

Redis errors reach the uploader, which retries them; `fetch` turns them into `ConnectionError` (the gateway
answers 503).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from stream.config.evidence import SharedEvidencePolicy
from stream.live.bus.redis_bus import connect
from stream.live.evidence.names import ALERT_ID, CONTENT_TYPES

log = logging.getLogger(__name__)

BATCH = 8  # chunks per round trip, written or read
MIB = 1 << 20


class EvidenceMissing(LookupError):
    """A file the gateway cannot serve from Redis; the message says why."""


def index_key(namespace: str, alert_id: str) -> str:
    return f"{namespace}:evidence:{alert_id}"


def chunk_key(namespace: str, alert_id: str, name: str, i: int) -> str:
    return f"{index_key(namespace, alert_id)}:{name}:{i}"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MIB):
            h.update(block)
    return h.hexdigest()


def _check(alert_id: str, name: str) -> None:
    if not ALERT_ID.match(alert_id) or name not in CONTENT_TYPES:
        raise EvidenceMissing(f"{alert_id}/{name} is not an evidence file name")


class RedisEvidence:
    def __init__(self, url: str, namespace: str, policy: SharedEvidencePolicy) -> None:
        self.namespace = namespace
        self.policy = policy
        self.client = connect(url, client_name="dfstream-evidence")
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- the node's side ------------------------------------------------------------------------------------

    def put(self, alert_id: str, folder: Path, names: Iterable[str], source: str | None) -> dict[str, str]:
        """Upload `names` from `folder` (in that order, under the alert's cap); name -> "stored", "kept" (there
        already, same sha256) or the reason it was refused."""
        key = index_key(self.namespace, alert_id)
        ttl = max(1, int(self.policy.ttl_s))
        entries = {k.decode(): json.loads(v) for k, v in self.client.hgetall(key).items()}
        used = sum(e.get("size", 0) for e in entries.values() if "refused" not in e)
        outcome: dict[str, str] = {}
        for name in names:
            _check(alert_id, name)
            path = folder / name
            if not path.is_file():
                outcome[name] = reason = f"{name} was not on its node when the alert's evidence was uploaded"
                self._refuse(key, name, reason, None, source, ttl)
                continue
            size, digest = path.stat().st_size, sha256_of(path)
            old = entries.get(name, {})
            if old.get("sha256") == digest:
                outcome[name] = "kept"
                continue
            if used - old.get("size", 0) + size > self.policy.max_alert_bytes:
                outcome[name] = reason = (
                    f"{name} ({size / MIB:.1f} MiB) would take this alert's evidence in Redis over its cap of "
                    f"{self.policy.max_alert_bytes / MIB:.1f} MiB (evidence.shared.max_alert_bytes); it stays on "
                    f"its node ({source or 'unknown'})")
                log.warning("evidence %s: %s", alert_id, reason)
                self._refuse(key, name, reason, size, source, ttl)
                continue
            chunks = self._write_chunks(alert_id, name, path, ttl)
            entry = {"size": size, "sha256": digest, "chunks": chunks, "source": source, "at": time.time()}
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, name, json.dumps(entry))
            pipe.expire(key, ttl)
            pipe.execute()
            used += size - old.get("size", 0)
            outcome[name] = "stored"
        return outcome

    def _write_chunks(self, alert_id: str, name: str, path: Path, ttl: int) -> int:
        n = 0
        with open(path, "rb") as f:
            while True:
                pipe = self.client.pipeline(transaction=False)
                for _ in range(BATCH):
                    block = f.read(self.policy.chunk_bytes)
                    if not block and n:
                        break
                    pipe.set(chunk_key(self.namespace, alert_id, name, n), block, ex=ttl)
                    n += 1
                    if not block:  # an empty file is one empty chunk
                        break
                pipe.execute()
                if len(block) < self.policy.chunk_bytes:
                    return n

    def _refuse(self, key: str, name: str, reason: str, size: int | None, source: str | None, ttl: int) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, name, json.dumps({"refused": reason, "size": size, "source": source, "at": time.time()}))
        pipe.expire(key, ttl)
        pipe.execute()

    # -- the gateway's side ---------------------------------------------------------------------------------

    def entry(self, alert_id: str, name: str) -> dict[str, Any]:
        """The file's hash field; EvidenceMissing when it has none, or was refused."""
        _check(alert_id, name)
        key = index_key(self.namespace, alert_id)
        raw = self.client.hget(key, name)
        if raw is None:
            if not self.client.exists(key):
                raise EvidenceMissing(f"no evidence of alert {alert_id} in Redis: not uploaded by its node yet, or "
                                      f"expired (kept {self.policy.ttl_s / 3600:g} h, evidence.shared.ttl_s)")
            raise EvidenceMissing(f"{name} of alert {alert_id} is not in Redis: not uploaded by its node yet")
        entry = json.loads(raw)
        if "refused" in entry:
            raise EvidenceMissing(entry["refused"])
        return entry

    def fetch(self, alert_id: str, name: str, folder: Path) -> Path:
        """Copy the file into `folder` (atomically, its sha256 checked) unless it is there already; its path.
        EvidenceMissing says why it cannot; ConnectionError (an OSError) when Redis does not answer."""
        try:
            return self._fetch(alert_id, name, Path(folder))
        except redis.RedisError as exc:
            raise ConnectionError(f"Redis: {type(exc).__name__}: {exc}") from exc

    def _fetch(self, alert_id: str, name: str, folder: Path) -> Path:
        dest = folder / name
        with self._lock(alert_id, name):
            if dest.is_file():
                return dest
            entry = self.entry(alert_id, name)
            h = hashlib.sha256()
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(f".{name}.{secrets.token_hex(4)}.part")
            try:
                with open(part, "wb") as f:
                    for first in range(0, entry["chunks"], BATCH):
                        keys = [chunk_key(self.namespace, alert_id, name, i)
                                for i in range(first, min(first + BATCH, entry["chunks"]))]
                        blocks = self.client.mget(keys)
                        if any(b is None for b in blocks):
                            raise EvidenceMissing(f"{name} of alert {alert_id} is incomplete in Redis (expired or "
                                                  "evicted); it may still be on its node")
                        for block in blocks:
                            h.update(block)
                            f.write(block)
                if h.hexdigest() != entry["sha256"]:
                    raise EvidenceMissing(f"{name} of alert {alert_id} in Redis does not match the sha256 its node "
                                          "uploaded; not served")
                os.replace(part, dest)
            finally:
                part.unlink(missing_ok=True)
        return dest

    def _lock(self, alert_id: str, name: str) -> threading.Lock:
        """One copy at a time per file (a video element asks for several ranges at once)."""
        with self._locks_guard:
            if len(self._locks) > 256:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return self._locks.setdefault((alert_id, name), threading.Lock())

    def close(self) -> None:
        self.client.close()
