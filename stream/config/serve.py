"""`serve` configuration: a YAML file validated by pydantic (unknown keys refused), command-line overrides,
and `${VAR}` references filled from the environment so camera passwords stay out of the file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from engines.choices import BACKENDS, PRECISIONS
from stream.config.channels import MqttConfig, RedisAuth
from stream.config.faces import DetectorConfig
from stream.config.paths import default_data_dir
from stream.config.scheduler import SchedulerConfig
from stream.config.sources import SourceConfig, SourcePolicy
from stream.config.verdicts import AlertPolicy, EvidencePolicy, VerdictPolicy
from stream.config.voices import VoiceConfig

DEFAULT_REDIS_NAMESPACE = "dfstream"  # = stream.live.bus.redis_bus.DEFAULT_NAMESPACE
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ConfigError(ValueError):
    """The config file is unreadable, invalid, or names an environment variable that is not set."""


class ServeConfig(BaseModel):
    """Everything `dfstream serve` runs with: the YAML file of `--config`, with the command line on top."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="bind address; anything but loopback requires the token")
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port of the page, API and websocket")
    token: str | None = Field(default=None, description="required by clients when bound beyond loopback")
    sources: list[SourceConfig] = Field(default=[], description="cameras, files and devices started with serve")
    # the default is engines.auto.AUTO (not imported: config stays torch-free)
    models: list[str] = Field(default=["auto"], description="engines to run, fused per face (`dfstream models "
                              "list`), or auto: the strongest this machine runs (GenD on a CUDA GPU, effb4-dfdc on a "
                              "CPU, else the best MesoNet file present, with a warning)")
    weights_dir: Path | None = Field(default=None, description="folder of weight files (default: "
                                     "$DFSTREAM_WEIGHTS, else ~/.cache/dfstream/weights)")
    calibration: list[Path] = Field(default=[], description="calibration maps (dfstream calibrate) or a fitted "
                                    "ensemble for the models; WEIGHTS.calibration.json beside weights is found too")
    backend: str = Field(default="auto", description="where engines run: one of engines.choices.BACKENDS")
    precision: str = Field(default="fp32", description="one of engines.choices.PRECISIONS (int8 needs calibration)")
    allowed_hosts: list[str] = Field(
        default=[], description="names (`name` or `name:port`; the bound port when none) the server answers to "
        "besides the loopback names and its bind address; every other Host is refused (DNS rebinding)")
    allowed_origins: list[str] = Field(
        default=[], description="extra Origins (`scheme://host:port`) allowed on the websocket, besides the "
        "pages of allowed hosts")
    max_message_bytes: int = Field(default=4096, gt=0, description="largest message a client may send")
    detector: DetectorConfig = Field(default=DetectorConfig(), description="the face detector (MTCNN)")
    scheduler: SchedulerConfig = Field(default=SchedulerConfig(), description="pacing, batching and the load "
                                       "governor")
    verdict: VerdictPolicy = Field(default=VerdictPolicy(), description="fusion, smoothing and hysteresis of "
                                   "each face's verdict")
    voice: VoiceConfig = Field(default=VoiceConfig(), description="the live voice path: voice engines on every "
                               "stream's sound, the speech gate, the voice verdict and how it joins the faces'")
    alerts: AlertPolicy = Field(default=AlertPolicy(), description="alert updates and webhooks")
    evidence: EvidencePolicy = Field(default=EvidencePolicy(), description="recordings around alerts and "
                                     "their retention")
    data_dir: Path = Field(default_factory=lambda: default_data_dir(),
                           description="alert log, spool and evidence ($DFSTREAM_DATA or ~/.local/share/dfstream)")
    redis: str | None = Field(default=None, description="redis://… (rediss://… for TLS) to publish overlays, "
                              "status and alerts to; its password goes in redis_auth, not here")
    redis_auth: RedisAuth = Field(default_factory=RedisAuth, description="the Redis password (from the "
                                  "environment) and TLS files")
    redis_namespace: str = Field(default=DEFAULT_REDIS_NAMESPACE, min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$",
                                 description="prefix of every Redis key and channel (`<ns>:alerts`, "
                                 "`<ns>:overlay:<stream>`): give each deployment sharing one Redis its own; a "
                                 "cluster's gateway, director and nodes all use the gateway's")
    mqtt: MqttConfig | None = Field(default=None, description="an MQTT broker to publish alerts, verdicts and "
                                    "status to, Frigate's way (stream.live.bus.channels.mqtt)")
    source_policy: SourcePolicy = Field(default_factory=SourcePolicy,
                                        description="what addresses sent through the API may be (the file and "
                                        "the command line are trusted)")
    max_streams: int = Field(default=32, gt=0, description="streams at once; more are refused with 503 (the "
                             "config file's own sources always start)")
    max_webrtc_peers: int | None = Field(default=None, gt=0, description="browser webcams at once (default: "
                                         "webcam.MAX_PEERS); more are refused with 503")
    max_relay_viewers: int | None = Field(default=None, gt=0, description="relay viewers at once (default: "
                                          "relay.MAX_VIEWERS); more are refused with 503")
    ws_messages_per_s: float = Field(default=20.0, gt=0, description="messages a websocket client may send per "
                                     "second (burst: twice that); more are refused with an error reply")
    persist_streams: bool = Field(default=True, description="remember streams added or removed through the API "
                                  "in data_dir/streams.json, and restore them at start")

    @field_validator("backend", "precision")
    @classmethod
    def _known_choice(cls, value: str, info: ValidationInfo) -> str:
        allowed = BACKENDS if info.field_name == "backend" else PRECISIONS
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        names = [s.name for s in sources]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {sorted(dupes)}")
        return sources

    @field_validator("allowed_hosts")
    @classmethod
    def _bare_hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            try:
                parts = urlsplit(f"//{host}")
                parts.port  # noqa: B018 - raises on a bad port
            except ValueError:
                parts = None
            if parts is None or not parts.hostname or any(c in host for c in "@/\\?# "):
                raise ValueError(f"allowed_hosts: {host!r} is not a host name or name:port (no scheme, no path)")
        return hosts

    @model_validator(mode="after")
    def _redis_tls(self) -> "ServeConfig":
        if self.redis_auth.tls_files and not (self.redis or "").startswith("rediss://"):
            raise ValueError("redis_auth: ca_file, cert_file and key_file need a rediss:// address in redis")
        return self

    @property
    def needs_token(self) -> bool:
        return self.host not in LOOPBACK_HOSTS


def expand_env(value: Any, env: dict[str, str] | None = None) -> Any:
    """Replace ${VAR} in every string of a parsed YAML tree; a missing variable is an error, never ''."""
    env = os.environ if env is None else env
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            if m.group(1) not in env:
                raise ConfigError(f"environment variable {m.group(1)} is not set (referenced as ${{{m.group(1)}}})")
            return env[m.group(1)]
        return ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    return value


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> ServeConfig:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = expand_env(loaded or {})
    for key, value in (overrides or {}).items():
        if key == "sources":
            data["sources"] = list(data.get("sources", [])) + value
        elif value is not None:
            data[key] = value
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration{f' in {path}' if path else ''}:\n{exc}") from None


def source_name_for(url: str, taken: set[str]) -> str:
    """A readable, unique stream name from an address: the file stem or the camera host."""
    parts = urlsplit(url)
    base = Path(parts.path).stem if not parts.scheme else (parts.hostname or parts.scheme)
    base = re.sub(r"[^A-Za-z0-9_.\-]+", "-", base).strip("-") or "stream"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name
