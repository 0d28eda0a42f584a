"""Reading the Redis alert stream (`<ns>:alerts`, written by redis_bus.py): the one reader that the cluster's
director (ending a lost node's alerts), its gateway (alerts back into the page) and `dfstream alerts --redis` use.

Two ways to read, both in the stream's order and both returning `(entry id, alert message)` pairs:
* `AlertStreamReader`: from a position (the start, or the newest `n` entries with `backlog`), each `read` the
  entries after the last one returned; `block_ms` waits for new ones (XREAD BLOCK). A restarted Redis that lost
  the stream is harmless: entries after the last id seen are still exactly the new ones.
* `AlertGroupReader`: through a consumer group (created at the start of the stream if new): first this
  consumer's own pending entries (delivered earlier, never acknowledged), then new ones; the caller `ack`s each
  once it is handled. A Redis that forgot the group (a restart without persistence) gets it back, and this
  consumer's pending entries are read again.

An entry trimmed away by MAXLEN while it was pending comes back with message None. Connection errors
(`redis_bus.UNREACHABLE`) reach the caller, who decides whether to retry; call `reconnected()` after one.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from stream.live.bus.redis_bus import DEFAULT_NAMESPACE, alerts_stream
from stream.messages import Message

PAGE = 100  # entries per XREAD / XREADGROUP call

Entry = tuple[str, Message | None]


def decode(fields: dict | None) -> Message | None:
    """An entry's alert message (with the publishing process's `source`), or None for a trimmed entry."""
    raw = (fields or {}).get(b"msg")
    return json.loads(raw) if raw else None


def _entries(resp: Any) -> list[tuple[str, Message | None]]:
    """Entries of a one-stream XREAD / XREADGROUP reply (RESP2: [[stream, entries]])."""
    return [(_id(entry_id), decode(fields)) for _name, entries in resp or [] for entry_id, fields in entries]


def _id(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


class AlertStreamReader:
    def __init__(self, client: redis.Redis, namespace: str = DEFAULT_NAMESPACE, after: str = "0-0") -> None:
        self.client = client
        self.stream = alerts_stream(namespace)
        self.last = after  # the id of the last entry returned

    def backlog(self, count: int) -> list[Entry]:
        """The newest `count` entries, oldest first; later reads go on after them."""
        newest = [(_id(i), decode(f)) for i, f in reversed(self.client.xrevrange(self.stream, count=count))]
        if newest:
            self.last = newest[-1][0]
        return newest

    def read(self, count: int = PAGE, block_ms: int | None = None) -> list[Entry]:
        """Up to `count` entries after the last one returned; with `block_ms`, wait that long for one."""
        got = _entries(self.client.xread({self.stream: self.last}, count=count, block=block_ms))
        if got:
            self.last = got[-1][0]
        return got

    def reconnected(self) -> None:
        """Nothing to redo: the position is an id, valid on any server."""


class AlertGroupReader:
    def __init__(self, client: redis.Redis, group: str, consumer: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.client = client
        self.stream = alerts_stream(namespace)
        self.group, self.consumer = group, consumer
        self._ready = False
        self._pending_after: str | None = "0"  # None once this consumer's own backlog is read again

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._ready = True

    def read(self, count: int = PAGE, block_ms: int | None = None) -> list[Entry] | None:
        """This consumer's pending entries, then new ones (waiting `block_ms` for one); [] when there is nothing,
        None when the pending backlog just ran out or the group was recreated (read again at once)."""
        if not self._ready:
            self._ensure_group()
        try:
            if self._pending_after is not None:
                got = _entries(self.client.xreadgroup(self.group, self.consumer, {self.stream: self._pending_after},
                                                      count=count))
                if not got:
                    self._pending_after = None
                    return None
                self._pending_after = got[-1][0]
                return got
            return _entries(self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count,
                                                   block=block_ms))
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.reconnected()  # the stream or group vanished (Redis restarted without persistence)
            return None

    def ack(self, entry_id: str) -> None:
        self.client.xack(self.stream, self.group, entry_id)

    def reconnected(self) -> None:
        """Check the group again and re-read this consumer's pending entries: the server may be a new one."""
        self._ready = False
        self._pending_after = "0"
