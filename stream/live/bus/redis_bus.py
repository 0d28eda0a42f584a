"""Redis bus: overlays and status on pub/sub channels (lossy), alerts on a Redis Stream (durable, exactly once).

Layout (the namespace, "dfstream" by default, lets several deployments share a Redis):
* `<ns>:overlay:<stream>`, `<ns>:status:<stream>`: PUBLISH of the message's JSON (plus "source"). Nobody
  needs an old overlay, so while Redis is down these are dropped and counted, never queued.
* `<ns>:alerts`: a Redis Stream, XADD with an approximate MAXLEN (trimming whole macro-nodes is far cheaper
  than exact trimming). Fields: key, id, event, stream, source, msg (the alert's JSON plus "source").
  Subscribers that must not miss anything read it with a consumer group (`dfstream alerts --group`).
* `<ns>:alert-key:<key>`: the idempotency claim of one alert message, set in the same Lua script as the XADD
  (SET NX EX, then XADD only if the SET won), so a replay after a lost reply or a crash never duplicates.

Several `serve` processes may publish to one Redis: alert ids are random, and every message carries this
process's `source` id.

All Redis I/O happens on one publisher thread fed by an in-memory queue, so `publish` returns at once whatever
Redis does. Lossy messages are admitted only while the queue holds fewer than `queue_max` of them; alerts are
always admitted (dropping one is worse than a few hundred bytes of memory, and the publisher's socket timeouts
bound how long it can stall before it moves alerts to the disk spool at fsync speed).

When Redis fails, alerts go to the spool (stream/bus/spool.py) in order; while the spool is non-empty, new
alerts are appended behind them, and the publisher retries with back-off, replaying the spool in order and
removing what Redis took. The pipeline never notices.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stream.live.bus.base import Bus, default_data_dir
from stream.messages import Message, dumps, is_alert
from stream.live.bus.spool import SPOOL_NAME, Spool
from stream.config.sources import Backoff

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "dfstream"
ALERTS_MAXLEN = 100_000  # approximate length the alerts stream is trimmed to (XADD MAXLEN ~)
KEY_TTL_S = 30 * 24 * 3600  # how long an idempotency key is remembered; must outlive any spool backlog
QUEUE_MAX = 1024  # lossy messages waiting for the publisher thread before new ones are dropped
CONNECT_TIMEOUT_S = 1.0  # a down Redis is noticed this fast...
IO_TIMEOUT_S = 2.0  # ...and a hung one this fast; then alerts go to the spool
RETRY_BACKOFF = Backoff(initial_s=0.25, factor=2.0, max_s=10.0, jitter=0.2)  # reconnect / replay attempts
REPLAY_CHUNK = 100  # spooled alerts replayed between two rewrites of the spool file
CLOSE_TIMEOUT_S = 10.0  # longest close() waits for the publisher to flush
NO_STREAM = "_"  # channel suffix for a message without a "stream"

# KEYS[1]: idempotency claim, KEYS[2]: alerts stream; ARGV[1]: ttl s, ARGV[2]: maxlen, ARGV[3..]: field, value...
# Returns the new entry id, or false when the key was already claimed (a replay).
CLAIM_AND_XADD = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
end
return false
"""

# Errors that mean "Redis is unreachable right now" (BusyLoadingError, a restarting server, is one of these).
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


def alerts_stream(namespace: str = DEFAULT_NAMESPACE) -> str:
    return f"{namespace}:alerts"


def alert_key(key: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    return f"{namespace}:alert-key:{key}"


def channel(msg_type: str, stream: str | None, namespace: str = DEFAULT_NAMESPACE) -> str:
    return f"{namespace}:{msg_type}:{stream or NO_STREAM}"


def instance_id() -> str:
    """Tells apart the serve processes publishing to one Redis: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def connect(url: str, client_name: str | None = None, socket_timeout: float = IO_TIMEOUT_S) -> redis.Redis:
    """A client that fails fast and never retries on its own: the caller decides what a failure means."""
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=socket_timeout,
                                retry=Retry(NoBackoff(), 0), client_name=client_name)


class RedisBus(Bus):
    def __init__(self, url: str, *, local: Bus | None = None, data_dir: Path | None = None,
                 spool_path: Path | None = None, namespace: str = DEFAULT_NAMESPACE, maxlen: int = ALERTS_MAXLEN,
                 key_ttl_s: int = KEY_TTL_S, queue_max: int = QUEUE_MAX, source: str | None = None,
                 backoff: Backoff = RETRY_BACKOFF) -> None:
        """`local` (usually a LocalBus feeding the websocket hub and the alerts log) gets every message first."""
        self.url = url
        self.local = local
        self.namespace = namespace
        self.stream_key = alerts_stream(namespace)
        self.maxlen = maxlen
        self.key_ttl_s = key_ttl_s
        self.queue_max = queue_max
        self.source = source or instance_id()
        self.backoff = backoff
        self.client = connect(url, client_name=f"dfstream-serve:{self.source}")
        self._xadd = self.client.register_script(CLAIM_AND_XADD)
        self.spool = Spool(spool_path or (data_dir or default_data_dir()) / SPOOL_NAME)
        self._queue: deque[Message] = deque()
        self._lossy_queued = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._down = False  # set by a failure; cleared by a successful replay
        self._attempt = 0
        self._next_retry = 0.0
        self.counters = {"lossy_sent": 0, "lossy_dropped": 0, "alerts_sent": 0, "alerts_duplicate": 0,
                         "alerts_spooled": 0, "alerts_replayed": 0}

    # -- the pipeline's side -------------------------------------------------------------------------------

    def publish(self, msg: Message) -> None:
        if self.local is not None:
            self.local.publish(msg)
        with self._cond:
            if is_alert(msg):
                if self._stop and (self._thread is None or not self._thread.is_alive()):
                    self._spool(msg)  # after close(): nobody will send it, so keep it for the next run
                    return
                self._queue.append(msg)
            elif self._down or self._stop or self._lossy_queued >= self.queue_max:
                self.counters["lossy_dropped"] += 1
                return
            else:
                self._queue.append(msg)
                self._lossy_queued += 1
            self._cond.notify()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="redis-bus", daemon=True)
            self._thread.start()
        if self.local is not None:
            self.local.start()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(CLOSE_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("redis bus: publisher still busy after %.0f s; spooled alerts stay on disk",
                            CLOSE_TIMEOUT_S)
                return
        with self._cond:  # alerts published after the thread ended (or with no thread at all)
            for msg in self._take():
                if is_alert(msg):
                    self._spool(msg)
        self.spool.close()
        self.client.close()
        if self.local is not None:
            self.local.close()

    def stats(self) -> dict[str, Any]:
        spooled = len(self.spool)  # outside _cond: never make publish() wait behind a spool fsync
        with self._cond:
            return {**self.counters, "spool": spooled, "queued": len(self._queue),
                    "redis_up": not self._down, "source": self.source}

    # -- the publisher thread -------------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._cond:
            self.counters[name] += 1

    def _take(self) -> list[Message]:
        batch = list(self._queue)
        self._queue.clear()
        self._lossy_queued = 0
        return batch

    def _needs_recovery(self) -> bool:
        return self._down or len(self.spool) > 0

    def _run(self) -> None:
        self._probe()
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    if self._needs_recovery():
                        wait = self._next_retry - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                batch = self._take()
                stopping = self._stop
            for msg in batch:
                self._handle(msg)
            # at shutdown, one more try whatever the back-off says: Redis may be back, and the spool
            # should not wait for the next run (a down Redis costs one connect timeout here)
            if self._needs_recovery() and (time.monotonic() >= self._next_retry or stopping):
                self._recover()
            if stopping:
                with self._cond:
                    if not self._queue:
                        return

    def _probe(self) -> None:
        """Learn at start whether Redis answers, so lossy messages are dropped at once if it does not."""
        try:
            self.client.ping()
        except redis.RedisError as exc:
            self._mark_down(exc)

    def _handle(self, msg: Message) -> None:
        if is_alert(msg):
            if self._needs_recovery():
                self._spool(msg)  # behind the alerts already waiting: order is kept
                return
            try:
                self._send_alert(msg)
            except redis.RedisError as exc:
                self._mark_down(exc)
                self._spool(msg)  # if Redis did take it, the replay is skipped by its key
            return
        if self._down:
            self._count("lossy_dropped")
            return
        try:
            self.client.publish(channel(str(msg.get("type")), msg.get("stream"), self.namespace),
                                dumps({**msg, "source": self.source}))
            self._count("lossy_sent")
        except UNREACHABLE as exc:
            self._count("lossy_dropped")
            self._mark_down(exc)
        except redis.RedisError as exc:
            self._count("lossy_dropped")
            log.warning("redis bus: %s message dropped: %s", msg.get("type"), exc)

    def _send_alert(self, msg: Message) -> None:
        """One atomic claim-and-XADD; a key seen before is counted as a duplicate and not added."""
        key = str(msg.get("key") or f"{msg.get('id')}:{msg.get('event')}:{msg.get('seq')}")
        fields = ["key", key, "id", str(msg.get("id")), "event", str(msg.get("event")),
                  "stream", str(msg.get("stream")), "source", self.source, "msg", dumps({**msg, "source": self.source})]
        entry = self._xadd(keys=[alert_key(key, self.namespace), self.stream_key],
                           args=[self.key_ttl_s, self.maxlen, *fields])
        self._count("alerts_sent" if entry is not None else "alerts_duplicate")

    def _spool(self, msg: Message) -> None:
        try:
            self.spool.append(msg)
            self._count("alerts_spooled")
        except (OSError, ValueError):  # ValueError: spool already closed
            log.exception("redis bus: CANNOT SPOOL alert %s; it is only in the alerts log", msg.get("key"))

    def _mark_down(self, exc: Exception) -> None:
        if not self._down:
            log.warning("redis bus: Redis unreachable (%s); alerts are spooled to %s", exc, self.spool.path)
        self._down = True
        self._next_retry = time.monotonic() + self.backoff.delay(self._attempt)
        self._attempt += 1

    def _recover(self) -> None:
        """Ping, then replay the spool in order; on success Redis is up again and the spool is empty."""
        try:
            self.client.ping()
            while entries := self.spool.entries()[:REPLAY_CHUNK]:
                done = 0
                try:
                    for msg in entries:
                        self._send_alert(msg)
                        done += 1
                        self._count("alerts_replayed")
                finally:
                    if done:
                        self.spool.drop_head(done)
        except redis.RedisError as exc:
            self._mark_down(exc)
            return
        if self._down:
            log.info("redis bus: Redis is back; spool replayed")
        self._down = False
        self._attempt = 0
