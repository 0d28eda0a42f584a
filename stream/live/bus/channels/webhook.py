"""Signed webhooks: every alert passing a hook's filters is POSTed as JSON, at least once, in order.

Why a queue on disk per hook: a receiver can be down for minutes (a deploy, a network cut) and `serve` can be
restarted meanwhile; an alert must still reach it. The hook's `SpooledSender` (stream.live.bus.sender) appends
each alert to the hook's fsynced spool on the hook's own thread, then POSTs from the head; it leaves the spool only
once the receiver answered 2xx. A crash between the answer and the removal re-sends it after the restart, with the
same `Idempotency-Key` (the alert message's `key`), so a receiver that honours the key processes it once.

Why one thread per hook: a slow or dead receiver then only holds its own queue.

A delivery that fails `max_attempts` times (retried with the hook's capped, jittered back-off, whose level only
a success resets) is moved to `<name>.dead.jsonl` beside the queue, so one alert a receiver will never take (a 400
on its payload) stops holding back the alerts behind it; dead letters are counted in `stats()`, `/readyz` and
`/metrics`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from stream.config.channels import WebhookConfig
from stream.live.bus.channels.base import ChannelError
from stream.live.bus.sender import SenderPolicy, SpooledChannel, SpooledSender
from stream.messages import Alert, Message, dumps, is_alert

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Dfstream-Signature"  # "sha256=<hex HMAC-SHA256 of the raw body>", GitHub's layout
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Dfstream-Event"
USER_AGENT = "dfstream-webhook/1"
QUEUE_SUFFIX = ".queue.jsonl"
DEAD_SUFFIX = ".dead.jsonl"
WEBHOOKS_DIR = "webhooks"  # under serve's data_dir


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


CLOSE_SLACK_S = 5.0  # close() waits out one POST in flight (its timeout_s) plus this much


class WebhookChannel(SpooledChannel):
    """One hook: its filters and its signed POST; its queue, retries and dead letters are the sender's."""

    kind = "webhook"
    kinds = (Alert,)

    def __init__(self, config: WebhookConfig, secret: bytes, folder: Path) -> None:
        self.config = config
        self.name = config.label
        self._secret = secret
        self._session = requests.Session()
        folder = Path(folder)
        self.sender = SpooledSender(self, folder / f"{self.name}{QUEUE_SUFFIX}",
                                    SenderPolicy(backoff=config.backoff, max_attempts=config.max_attempts,
                                                 close_timeout_s=config.timeout_s + CLOSE_SLACK_S),
                                    dead_path=folder / f"{self.name}{DEAD_SUFFIX}")

    @property
    def spool(self):
        return self.sender.spool

    def wants(self, msg: Message) -> bool:
        return is_alert(msg) and self.config.wants(msg)

    def deliver(self, msg: Message) -> str | None:
        return post(self._session, self.config, self._secret, msg)

    def release(self) -> None:
        self._session.close()

    def stats(self) -> dict[str, Any]:
        s = self.sender.stats()
        return {"delivered": s["delivered"], "failed_attempts": s["failed_attempts"],
                "dead_letters": s["dead_letters"], "queued": s["spool"] + s["durable_waiting"],
                "last_error": s["last_error"]}
