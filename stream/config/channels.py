"""Alert channels beyond the websocket, the local log and Redis: signed webhooks and MQTT.

Secrets never live in the file: each record names the environment variable that holds its secret, read when
`serve` starts (a variable that is not set is an error then, never an empty secret).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stream.config.sources import Backoff

CHANNEL_NAME = r"^[A-Za-z0-9_.\-]+$"  # a webhook's name is also its queue's file name
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Retries of one delivery: from 1 s, doubling, capped at 5 min, ±20 % jitter so many hooks failing together
# (one receiver behind several names, a network cut) do not retry in step. The cap bounds how late a delivery
# is after the receiver returns; a shorter cap would hammer a receiver that is down for hours.
WEBHOOK_BACKOFF = Backoff(initial_s=1.0, factor=2.0, max_s=300.0, jitter=0.2)
# Failed attempts after which a delivery goes to the dead-letter file: with WEBHOOK_BACKOFF about 18 minutes of
# trying. Fewer would dead-letter during an ordinary receiver restart; more would hold the queue's head (and
# every alert behind it, since order is kept) for hours behind a receiver that will never take it.
WEBHOOK_MAX_ATTEMPTS = 12


class WebhookConfig(BaseModel):
    """One HTTP receiver. Each alert message passing the filters is POSTed as JSON, signed, at least once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=CHANNEL_NAME,
                             description="the hook's name (`dfstream alerts test-webhook NAME`, its queue file); "
                             "default: the URL's host and port")
    url: str = Field(description="http:// or https:// address the alerts are POSTed to")
    secret_env: str = Field(pattern=ENV_NAME, description="environment variable holding the HMAC-SHA256 secret "
                            "of the X-Dfstream-Signature header")
    streams: list[str] | None = Field(default=None, description="only alerts of these streams (default: all)")
    min_score: float | None = Field(default=None, ge=0, le=1, description="only alerts whose score_max reaches this")
    events: list[Literal["start", "update", "end"]] | None = Field(
        default=None, description="only these alert events (default: start, update and end)")
    timeout_s: float = Field(default=10.0, gt=0, description="one POST's connect + read limit; longer counts "
                             "as a failure and is retried")
    max_attempts: int = Field(default=WEBHOOK_MAX_ATTEMPTS, gt=0, description="failures of one delivery before "
                              "it is moved to the dead-letter file")
    backoff: Backoff = Field(default=WEBHOOK_BACKOFF, description="delays between retries of one delivery")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url {url!r} must be http:// or https:// with a host")
        return url

    @property
    def label(self) -> str:
        """The name, or one made from the URL's host and port (stable across restarts: it names the queue)."""
        if self.name:
            return self.name
        parts = urlsplit(self.url)
        return re.sub(r"[^A-Za-z0-9_.\-]+", "-", parts.netloc).strip("-") or "webhook"

    def wants(self, msg: dict) -> bool:
        """True for an alert message that passes this hook's stream, score and event filters."""
        if self.streams is not None and msg.get("stream") not in self.streams:
            return False
        if self.events is not None and msg.get("event") not in self.events:
            return False
        score = msg.get("score_max")
        return self.min_score is None or (isinstance(score, int | float) and score >= self.min_score)


def unique_webhooks(hooks: list[WebhookConfig]) -> list[WebhookConfig]:
    labels = [h.label for h in hooks]
    dupes = sorted({n for n in labels if labels.count(n) > 1})
    if dupes:
        raise ValueError(f"webhook names must be unique (give each a `name`), repeated: {dupes}")
    return hooks


class TlsFiles(BaseModel):
    """The files of a TLS link to a broker (Redis, MQTT). With none, the system's CAs check the server's
    certificate (right for a certificate a public CA signed); a private CA's certificate goes in `ca_file`. A
    client certificate is only for servers that ask for one (Redis's default `tls-auth-clients yes`). The key file
    is a path, never its content: keep it readable by serve's user only."""

    ca_file: Path | None = Field(default=None, description="PEM file of the CA(s) that signed the server's "
                                 "certificate (default: the system's CAs); needs a TLS URL (rediss://, mqtts://)")
    cert_file: Path | None = Field(default=None, description="PEM client certificate, for a server that asks for "
                                   "one (needs key_file)")
    key_file: Path | None = Field(default=None, description="PEM private key of cert_file")

    @model_validator(mode="after")
    def _pair(self) -> "TlsFiles":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate and its key)")
        return self

    @property
    def tls_files(self) -> bool:
        return any(f is not None for f in (self.ca_file, self.cert_file, self.key_file))


class RedisAuth(TlsFiles):
    """How serve signs in to Redis (`requirepass`, or an ACL user) and checks its TLS certificate. The password
    never lives in the file or the URL: it is read from `password_env` when serve starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username_env: str | None = Field(default=None, pattern=ENV_NAME, description="environment variable holding "
                                     "the ACL user name (none: the default user, as with requirepass)")
    password_env: str | None = Field(default=None, pattern=ENV_NAME, description="environment variable holding "
                                     "the password (requirepass, or the ACL user's)")


class MqttConfig(TlsFiles):
    """An MQTT broker, Frigate's way: `<prefix>/events` (alert messages, QoS 1), `<prefix>/<stream>/verdict` and
    `<prefix>/<stream>/status` (retained), `<prefix>/available` (`online`, and `offline` as the last will)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="mqtt://host[:1883] or mqtts://host[:8883]")
    username_env: str | None = Field(default=None, pattern=ENV_NAME, description="environment variable holding "
                                     "the user name (none: anonymous)")
    password_env: str | None = Field(default=None, pattern=ENV_NAME,
                                     description="environment variable holding the password")
    topic_prefix: str = Field(default="dfstream", min_length=1, pattern=r"^[^#+\s]+$",
                              description="first level of every topic (no wildcards); give each serve on one "
                              "broker its own, or their availability and stream topics mix")
    client_id: str | None = Field(default=None, description="MQTT client id (default: dfstream-HOST-<digest of "
                                  "data_dir>, unique per serve)")

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"mqtt url {url!r} must be mqtt://host[:port] or mqtts://host[:port]")
        parts.port  # noqa: B018 - raises on a bad port
        return url

    @model_validator(mode="after")
    def _password_needs_user(self) -> "MqttConfig":
        if self.password_env and not self.username_env:
            raise ValueError("mqtt: password_env needs username_env")
        if self.tls_files and not self.tls:
            raise ValueError("mqtt: ca_file, cert_file and key_file need an mqtts:// url")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"
