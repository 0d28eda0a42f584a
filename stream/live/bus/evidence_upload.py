"""A cluster node's evidence, uploaded into Redis as soon as it is written, so the gateway can serve it.

One more subscriber of the node's bus (the node worker subscribes it, in the wire form): an alert's `start`
names its face snapshot and strip, and the message that carries the custody (the `end`, or an `update` when
`max_clip_s` cut the recording of an alert still open) names every file of the manifest. Each such message is
spooled and delivered by a `SpooledSender`, like an alert to Redis: in order, at least once, through Redis
outages and restarts of the node worker (a file already in Redis with the same sha256 is not sent again).
Delivering one uploads its files (redis_evidence.py): the small ones first, then the recording, under the
alert's cap. A file the message names that is not written yet is waited for (the evidence thread writes it a
moment after the message) up to `WRITE_GRACE_S`; then it is recorded as missing and the next message goes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import redis

from stream.config.evidence import SharedEvidencePolicy
from stream.live.bus.redis_bus import RETRY_BACKOFF, UNREACHABLE
from stream.live.bus.redis_evidence import RedisEvidence
from stream.live.bus.sender import SenderPolicy, SpooledChannel, SpooledSender
from stream.live.evidence.names import ALERT_ID, BURNED, MANIFEST, OVERLAY, RECORDING, SNAPSHOT, STRIP
from stream.messages import Alert, Message, is_alert

log = logging.getLogger(__name__)

SPOOL_FILE = "evidence-upload-spool.jsonl"
# A file a message names may be written a moment after the message (the evidence thread): waited for this long,
# then recorded as missing. Longer holds back the uploads behind it when a file never comes; shorter could give
# up on a slow disk.
WRITE_GRACE_S = 30.0
ORDER = (MANIFEST, OVERLAY, SNAPSHOT, STRIP, RECORDING, BURNED)  # small first: the cap refuses the big ones


def files_of(msg: Message) -> list[str]:
    """The evidence files an alert message names, smallest kinds first: the face files of a `start`, and every
    file of the manifest with the custody."""
    custody = msg.get("custody")
    if custody:
        names = {MANIFEST, *custody.get("files", {})}
    elif msg.get("event") == "start":
        evidence = msg.get("evidence") or {}
        names = {n for n, kind in ((SNAPSHOT, "snapshot"), (STRIP, "clip")) if evidence.get(kind)}
    else:
        return []
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


class EvidenceUploader(SpooledChannel):
    kind = "evidence"
    name = "upload"
    kinds = (Alert,)

    def __init__(self, url: str, namespace: str, root: Path, policy: SharedEvidencePolicy, data_dir: Path,
                 source: str | None) -> None:
        """`root`: the node's evidence folder; `source`: its bus source id (named in a refusal)."""
        self.root = Path(root)
        self.source = source
        self.shelf = RedisEvidence(url, namespace, policy)
        self.counters = {"uploaded_files": 0, "refused_files": 0}
        self.sender = SpooledSender(self, Path(data_dir) / SPOOL_FILE, SenderPolicy(backoff=RETRY_BACKOFF))

    def wants(self, msg: Message) -> bool:
        return is_alert(msg) and bool(files_of(msg)) and bool(ALERT_ID.match(str(msg.get("id"))))

    def durable(self, msg: Message) -> bool:
        return True

    def deliver(self, msg: Message) -> str | None:
        alert_id, names = str(msg["id"]), files_of(msg)
        folder = self.root / alert_id
        waiting = [n for n in names if not (folder / n).is_file()]
        if waiting and time.time() - float(msg.get("ts") or 0) < WRITE_GRACE_S:
            return f"not written yet: {', '.join(waiting)}"
        try:
            outcome = self.shelf.put(alert_id, folder, names, self.source)
        except (*UNREACHABLE, redis.RedisError) as exc:  # an outage, or a full Redis: tried again later
            return f"{type(exc).__name__}: {exc}"
        self.counters["uploaded_files"] += sum(v == "stored" for v in outcome.values())
        self.counters["refused_files"] += sum(v not in ("stored", "kept") for v in outcome.values())
        return None

    def stats(self) -> dict[str, Any]:
        return {**self.counters, **self.sender.stats()}

    def release(self) -> None:
        self.shelf.close()
