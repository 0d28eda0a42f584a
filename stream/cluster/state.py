"""Where the cluster's state outlives its head: Ray's own tables and the director's, both in the deployment's Redis.

`dfstream cluster head --redis URL` turns on two things, one for each half of the control plane:

* **Ray's GCS fault tolerance.** The GCS keeps its tables (nodes, named and detached actors, jobs) in Redis
  under the key prefix `--cluster-name` (Ray's `external_storage_namespace`) instead of in memory. When the head
  is lost, the workers' raylets and every actor on them keep running and retry the GCS for
  `HeadLoss.reconnect_s`; the same head command started again loads the tables and the workers reconnect, with
  their node ids, so the node workers (detached, named `node-<id>`) are found again.
* **The director's table** (`DirectorState`): the pipeline, every camera and its node, the nodes' bus sources
  and the drained node names, one JSON document at `<cluster-name>:director`, rewritten whenever it changes.
  A director started after a head loss (Ray restarts it on the new head) reads it back, adopts the running node
  workers and changes nothing that still runs; only what the dead head had not written yet is lost.

Ray takes the address as `redis[s]://HOST:PORT` and the credentials as `ray start` flags; the database number is
Ray's own (its keys carry the namespace prefix), so `/N` in the URL applies to the director's table only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

FORMAT = "dfstream-director/1"
DEFAULT_CLUSTER_NAME = "dfstream-cluster"
IO_TIMEOUT_S = 2.0  # one read or write of the table; a slower Redis counts as unreachable this round


@dataclass(frozen=True)
class StateStore:
    """The Redis that holds the cluster's state and the name its keys go under (several clusters may share one
    Redis, each under its own name)."""

    url: str
    name: str = DEFAULT_CLUSTER_NAME

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(f"--redis wants redis://HOST:PORT[/DB] or rediss://… (got {self.redacted})")
        if not self.name or any(c in self.name for c in " :{}*?[]"):
            raise ValueError(f"cluster name {self.name!r}: use letters, digits, '-', '_' or '.'")

    @property
    def redacted(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or '?'}:{parts.port or 6379}{parts.path}"

    @property
    def key(self) -> str:
        return f"{self.name}:director"

    def ray_env(self) -> dict[str, str]:
        """The environment `ray start --head` reads to keep the GCS in this Redis."""
        parts = urlsplit(self.url)
        return {"RAY_REDIS_ADDRESS": f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}",
                "RAY_external_storage_namespace": self.name}

    def forget(self) -> None:
        """Delete this cluster's saved state: the director's table and Ray's GCS tables (its `RAY<name>@` keys,
        removed by Ray's own cleanup, the one KubeRay runs), so the head starts a new cluster. Nothing else in
        that Redis is touched."""
        from ray._private.gcs_utils import cleanup_redis_storage

        from stream.live.bus.redis_bus import connect

        client = connect(self.url, client_name="dfstream-head")
        try:
            client.delete(self.key)
        finally:
            client.close()
        parts = urlsplit(self.url)
        cleanup_redis_storage(parts.hostname, parts.port or 6379, unquote(parts.password or ""),
                              parts.scheme == "rediss", self.name, unquote(parts.username or "") or None)

    def ray_args(self) -> list[str]:
        """`ray start` flags for the Redis credentials in the URL (Ray reads them nowhere else)."""
        parts = urlsplit(self.url)
        args = []
        if parts.username:
            args += ["--redis-username", unquote(parts.username)]
        if parts.password:
            args += ["--redis-password", unquote(parts.password)]
        return args


class DirectorState:
    """The director's table in Redis: `load` once when the director starts, `save` whenever it changed. Both
    raise `redis_bus.UNREACHABLE` errors to the caller, which decides what a failure means."""

    def __init__(self, store: StateStore) -> None:
        from stream.live.bus.redis_bus import connect

        self.store = store
        self.client = connect(store.url, client_name="dfstream-director-state", socket_timeout=IO_TIMEOUT_S)
        self._written: str | None = None

    def load(self) -> dict[str, Any] | None:
        """The saved table, or None when this cluster has none yet (a first start)."""
        raw = self.client.get(self.store.key)
        if raw is None:
            return None
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise ValueError(f"{self.store.key} in Redis holds {doc.get('format')!r}, not {FORMAT}: another program's "
                             "key, or a newer dfstream; start the head with another --cluster-name")
        self._written = raw.decode() if isinstance(raw, bytes) else raw
        return doc

    def save(self, doc: dict[str, Any]) -> bool:
        """Write `doc` if it differs from what was last written; whether it was written."""
        body = json.dumps({"format": FORMAT, **doc}, sort_keys=True, separators=(",", ":"))
        if body == self._written:
            return False
        self.client.set(self.store.key, body)
        self._written = body
        return True

    def close(self) -> None:
        self.client.close()
