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

All Redis I/O happens on the `SpooledSender`'s one thread (stream.live.bus.sender), so `publish` returns at once
whatever Redis does: alerts go to its fsynced spool, then to the stream from the spool's head, in order, each
removed once Redis took it; while Redis is down they wait there and are replayed with back-off when it returns.
Lossy messages are sent in their turn, and dropped (counted) while Redis is known to be down: nobody needs an old
overlay. The pipeline never notices.

Readers of the alert stream (the director, the gateway, `dfstream alerts`) use `redis_alerts.py`.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stream.config.channels import RedisAuth, TlsFiles
from stream.config.paths import default_data_dir
from stream.config.sources import Backoff
from stream.live.bus.credentials import Credentials, check_tls_files, read_credentials
from stream.live.bus.sender import QUEUE_MAX, SenderPolicy, SpooledChannel, SpooledSender
from stream.live.bus.spool import SPOOL_NAME
from stream.messages import OVERLAY, STATUS, WIRE, Message, dumps

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "dfstream"  # = stream.config.serve.DEFAULT_REDIS_NAMESPACE (kept literal: no config import)
ALERTS_MAXLEN = 100_000  # approximate length the alerts stream is trimmed to (XADD MAXLEN ~)
KEY_TTL_S = 30 * 24 * 3600  # how long an idempotency key is remembered; must outlive any spool backlog
CONNECT_TIMEOUT_S = 1.0  # a down Redis is noticed this fast...
IO_TIMEOUT_S = 2.0  # ...and a hung one this fast; then alerts go to the spool
RETRY_BACKOFF = Backoff(initial_s=0.25, factor=2.0, max_s=10.0, jitter=0.2)  # reconnect / replay attempts
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

# Errors that mean the password (or user) is wrong or missing, or sent to a Redis that has none
REFUSED = (redis.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError)
# Errors that mean "Redis is unreachable right now" (BusyLoadingError, a restarting server, is one of these).
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


def alerts_stream(namespace: str = DEFAULT_NAMESPACE) -> str:
    return f"{namespace}:alerts"


def alert_key(key: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    return f"{namespace}:alert-key:{key}"


def channel(msg_type: str, stream: str | None, namespace: str = DEFAULT_NAMESPACE) -> str:
    return f"{namespace}:{msg_type}:{stream or NO_STREAM}"


def channel_patterns(namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    """PSUBSCRIBE patterns of every stream's overlay and status channels (what the cluster's gateway reads)."""
    return [channel(kind, "*", namespace) for kind in (OVERLAY, STATUS)]


def instance_id() -> str:
    """Tells apart the serve processes publishing to one Redis: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def connect(url: str, client_name: str | None = None, socket_timeout: float = IO_TIMEOUT_S,
            credentials: Credentials | None = None, tls: TlsFiles | None = None) -> redis.Redis:
    """A client that fails fast and never retries on its own: the caller decides what a failure means.
    `credentials` (from the environment) override any in the URL; `tls` files apply to a rediss:// URL."""
    options: dict[str, Any] = {}
    if credentials is not None and credentials.username is not None:
        options["username"] = credentials.username
    if credentials is not None and credentials.password is not None:
        options["password"] = credentials.password
    if tls is not None and url.startswith("rediss://"):
        options.update(ssl_ca_certs=_path(tls.ca_file), ssl_certfile=_path(tls.cert_file),
                       ssl_keyfile=_path(tls.key_file), ssl_cert_reqs="required")
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=socket_timeout,
                                retry=Retry(NoBackoff(), 0), client_name=client_name, **options)


def open_credentials(auth: RedisAuth, env: dict[str, str] | None = None) -> Credentials:
    """The password (and user) from their variables, and the TLS files checked: a ChannelError names what is
    missing before any spool or connection is opened."""
    credentials = read_credentials("redis", auth.username_env, auth.password_env, env)
    check_tls_files("redis", auth)
    return credentials


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


class RedisBus(SpooledChannel):
    """The bus's Redis edge: subscribes to every wire message; overlays and status to pub/sub, alerts to the
    stream, each tagged with this process's `source`."""

    kind = "redis"
    kinds = WIRE

    def __init__(self, url: str, *, data_dir: Path | None = None, spool_path: Path | None = None,
                 namespace: str = DEFAULT_NAMESPACE, maxlen: int = ALERTS_MAXLEN, key_ttl_s: int = KEY_TTL_S,
                 queue_max: int = QUEUE_MAX, source: str | None = None, backoff: Backoff = RETRY_BACKOFF,
                 credentials: Credentials | None = None, tls: TlsFiles | None = None) -> None:
        self.url = url
        self.name = namespace
        self.namespace = namespace
        self.stream_key = alerts_stream(namespace)
        self.maxlen = maxlen
        self.key_ttl_s = key_ttl_s
        self.source = source or instance_id()
        self._credentials = credentials or Credentials()
        self.client = connect(url, client_name=f"dfstream-serve:{self.source}", credentials=credentials, tls=tls)
        self._xadd = self.client.register_script(CLAIM_AND_XADD)
        self._up = True  # until a failure says otherwise; cleared by a failure, set by a success
        self.counters = {"alerts_sent": 0, "alerts_duplicate": 0, "lossy_sent": 0, "lossy_dropped": 0}
        self.sender = SpooledSender(self, spool_path or (data_dir or default_data_dir()) / SPOOL_NAME,
                                    SenderPolicy(backoff=backoff, queue_max=queue_max, close_timeout_s=CLOSE_TIMEOUT_S))

    @property
    def spool(self):
        return self.sender.spool

    def stats(self) -> dict[str, Any]:
        s = self.sender.stats()
        return {**self.counters, "lossy_dropped": self.counters["lossy_dropped"] + s["lossy_dropped"],
                "alerts_spooled": s["backlogged"], "spool": s["spool"], "queued": s["queued"],
                "redis_up": self._up, "source": self.source, "last_error": s["last_error"]}

    # -- the sender's thread --------------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._up

    def _down(self, exc: Exception) -> str:
        """Redis cannot take messages now: say why once (a refused password names the variables to check)."""
        if isinstance(exc, REFUSED):
            error = f"Redis refused the credentials ({type(exc).__name__}: {exc}; {self._credentials.hint()})"
        else:
            error = f"{type(exc).__name__}: {exc}"
        if self._up or error != self.sender.last_error:
            log.warning("redis bus: Redis unreachable (%s); alerts are spooled to %s", error, self.spool.path)
        self._up = False
        return error

    def probe(self) -> str | None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            return self._down(exc)
        self._up = True
        return None

    def deliver(self, msg: Message) -> str | None:
        """One atomic claim-and-XADD; a key seen before is counted as a duplicate and not added (a replay after
        a lost reply or a crash)."""
        key = str(msg.get("key") or f"{msg.get('id')}:{msg.get('event')}:{msg.get('seq')}")
        fields = ["key", key, "id", str(msg.get("id")), "event", str(msg.get("event")),
                  "stream", str(msg.get("stream")), "source", self.source, "msg", dumps({**msg, "source": self.source})]
        try:
            entry = self._xadd(keys=[alert_key(key, self.namespace), self.stream_key],
                               args=[self.key_ttl_s, self.maxlen, *fields])
        except redis.RedisError as exc:  # if Redis did take it, the replay is skipped by its key
            return self._down(exc)
        self._up = True
        self.counters["alerts_sent" if entry is not None else "alerts_duplicate"] += 1
        return None

    def send_lossy(self, msg: Message) -> str | None:
        counters = self.counters
        if not self._up:
            counters["lossy_dropped"] += 1
            return None
        try:
            self.client.publish(channel(str(msg.get("type")), msg.get("stream"), self.namespace),
                                dumps({**msg, "source": self.source}))
        except UNREACHABLE as exc:
            counters["lossy_dropped"] += 1
            return self._down(exc)
        except redis.RedisError as exc:
            counters["lossy_dropped"] += 1
            log.warning("redis bus: %s message dropped: %s", msg.get("type"), exc)
            return None
        counters["lossy_sent"] += 1
        return None

    def release(self) -> None:
        self.client.close()
