"""Signed webhooks: every alert passing a hook's filters is POSTed as JSON, at least once, in order.

Why a queue on disk per hook: a receiver can be down for minutes (a deploy, a network cut) and `serve` can be
restarted meanwhile; an alert must still reach it. Each alert is appended to the hook's spool (the Redis bus's
fsynced `Spool`) on the hook's own thread, then POSTed from the head; it leaves the spool only once the receiver
answered 2xx. A crash between the answer and the removal re-sends it after the restart, with the same
`Idempotency-Key` (the alert message's `key`), so a receiver that honours the key processes it once.

Why one thread per hook: a slow or dead receiver then only holds its own queue. `publish` is called on the
pipeline's thread and only appends to an in-memory deque.

A delivery that fails `max_attempts` times (retried with the hook's capped, jittered back-off, whose level only
a success resets) is moved to
`<name>.dead.jsonl` beside the queue, so one alert a receiver will never take (a 400 on its payload) stops
holding back the alerts behind it; dead letters are counted in `stats()`, `/readyz` and `/metrics`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from stream.config.channels import WebhookConfig
from stream.live.bus.spool import Spool
from stream.messages import Message, dumps, is_alert

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Dfstream-Signature"  # "sha256=<hex HMAC-SHA256 of the raw body>", GitHub's layout
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Dfstream-Event"
USER_AGENT = "dfstream-webhook/1"
QUEUE_SUFFIX = ".queue.jsonl"
DEAD_SUFFIX = ".dead.jsonl"
WEBHOOKS_DIR = "webhooks"  # under serve's data_dir


class ChannelError(ValueError):
    """A channel cannot be set up as configured (a secret's variable is not set): said before serve starts."""


def read_secret(config: WebhookConfig, env: dict[str, str] | None = None) -> bytes:
    """The hook's secret from its environment variable; unset or empty is an error, never an empty key."""
    value = (os.environ if env is None else env).get(config.secret_env, "")
    if not value:
        raise ChannelError(f"webhook {config.label}: environment variable {config.secret_env} (secret_env) is "
                           "not set or empty")
    return value.encode()


def sign(secret: bytes, body: bytes) -> str:
    """The X-Dfstream-Signature value: receivers recompute it over the raw body and compare in constant time."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, signature: str) -> bool:
    """What a receiver does (and the tests do) with the header."""
    return hmac.compare_digest(sign(secret, body), signature or "")


def shown(url: str) -> str:
    """scheme://host:port only: a hook's path and query are often its secret (Slack, Teams), so never printed."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    return f"{origin}/…" if parts.path.strip("/") or parts.query else f"{origin}/"


def post(session: requests.Session, config: WebhookConfig, secret: bytes, msg: Message) -> str | None:
    """One signed POST of `msg`; None when the receiver took it (2xx), else why not, in words."""
    body = dumps(msg).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, SIGNATURE_HEADER: sign(secret, body),
               IDEMPOTENCY_HEADER: str(msg.get("key") or ""), EVENT_HEADER: str(msg.get("event") or "")}
    try:
        resp = session.post(config.url, data=body, headers=headers, timeout=config.timeout_s, allow_redirects=False)
    except requests.Timeout:
        return f"no answer from {shown(config.url)} within {config.timeout_s:g} s"
    except requests.ConnectionError:
        return f"cannot connect to {shown(config.url)}"
    except requests.RequestException as exc:  # the exception's text holds the full URL: not repeated
        return f"{type(exc).__name__} posting to {shown(config.url)}"
    with resp:
        if 200 <= resp.status_code < 300:
            return None
        return f"{shown(config.url)} answered HTTP {resp.status_code} {resp.reason or ''}".strip()


class WebhookChannel:
    """One hook's queue and delivery thread. `publish` returns at once; `close` leaves undelivered alerts on disk."""

    def __init__(self, config: WebhookConfig, secret: bytes, folder: Path) -> None:
        self.config = config
        self.name = config.label
        self._secret = secret
        folder = Path(folder)
        self.spool = Spool(folder / f"{self.name}{QUEUE_SUFFIX}")
        self.dead_path = folder / f"{self.name}{DEAD_SUFFIX}"
        self._incoming: deque[Message] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._session = requests.Session()
        self._attempt = 0  # failures of the head delivery
        self._failures = 0  # failures in a row, whichever the head: the back-off level
        self._next_try = 0.0
        self.last_error: str | None = None
        self.counters = {"delivered": 0, "failed_attempts": 0, "dead_letters": self._count_dead()}

    def _count_dead(self) -> int:
        try:
            with open(self.dead_path, "rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    # -- the pipeline's side ---------------------------------------------------------------------------------

    def publish(self, msg: Message) -> None:
        if not is_alert(msg) or not self.config.wants(msg):
            return
        with self._cond:
            self._incoming.append(msg)
            self._cond.notify()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"webhook-{self.name}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(self.config.timeout_s + 5)
            if self._thread.is_alive():
                log.warning("webhook %s: a delivery is still in flight at shutdown; its queue stays on disk",
                            self.name)
                return
        with self._cond:  # alerts handed over after the thread ended
            batch = self._take()
        self._queue(batch)
        self.spool.close()
        self._session.close()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            incoming = len(self._incoming)
        return {**self.counters, "queued": len(self.spool) + incoming, "last_error": self.last_error}

    # -- the delivery thread ---------------------------------------------------------------------------------

    def _take(self) -> list[Message]:
        """What the pipeline handed over (call with _cond held)."""
        batch = list(self._incoming)
        self._incoming.clear()
        return batch

    def _queue(self, batch: list[Message]) -> None:
        """Append to the durable queue, outside _cond: publish() never waits behind an fsync."""
        for msg in batch:
            try:
                self.spool.append(msg)
            except (OSError, ValueError):
                log.exception("webhook %s: CANNOT QUEUE alert %s; it is only in the alerts log", self.name,
                              msg.get("key"))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._incoming:
                    if len(self.spool) and time.monotonic() >= self._next_try:
                        break
                    self._cond.wait(max(0.0, self._next_try - time.monotonic()) if len(self.spool) else None)
                batch, stopping = self._take(), self._stop
            self._queue(batch)
            if stopping:
                return
            if len(self.spool) and time.monotonic() >= self._next_try:
                self._deliver_head()

    def _deliver_head(self) -> None:
        msg = self.spool.entries()[0]
        error = post(self._session, self.config, self._secret, msg)
        if error is None:
            self.spool.drop_head(1)
            self.counters["delivered"] += 1
            if self._attempt:
                log.info("webhook %s: receiver back, delivered %s", self.name, msg.get("key"))
            self._attempt, self._failures, self._next_try, self.last_error = 0, 0, 0.0, None
            return
        self.counters["failed_attempts"] += 1
        self.last_error = error
        self._attempt += 1
        # the delay grows with failures in a row across heads (reset only by a success): a receiver that is
        # down is not hammered again from 1 s each time a head is dead-lettered
        delay = self.config.backoff.delay(self._failures)
        self._failures += 1
        self._next_try = time.monotonic() + delay
        if self._attempt >= self.config.max_attempts:
            self._dead_letter(msg, error)
            self.spool.drop_head(1)
            self._attempt = 0
            return
        log.warning("webhook %s: delivery of %s failed (%s), attempt %d/%d; retrying in %.1f s", self.name,
                    msg.get("key"), error, self._attempt, self.config.max_attempts, delay)

    def _dead_letter(self, msg: Message, error: str) -> None:
        record = {"dead_at": time.time(), "attempts": self._attempt, "error": error, "webhook": self.name,
                  "msg": msg}
        with open(self.dead_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.counters["dead_letters"] += 1
        log.error("webhook %s: alert %s moved to %s after %d failed attempts (%s)", self.name, msg.get("key"),
                  self.dead_path, self._attempt, error)
