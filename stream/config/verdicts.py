"""Judging settings: the verdict policy (fusion weights, smoothing, hysteresis) and alerts (evidence: evidence.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stream.config.channels import WebhookConfig, unique_webhooks
from stream.config.evidence import EvidencePolicy  # noqa: F401  (re-exported: its old home)


class VerdictPolicy(BaseModel):
    """How each face's engine scores become a verdict: a weighted mean, a rolling median or EMA, and k-update
    hysteresis between `t_low` and `t_high`, so a score wavering around one threshold never flaps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: dict[str, float] = Field(default={}, description="engine name -> weight; unnamed engines weigh 1")
    smoothing: Literal["median", "ema"] = Field(default="median", description="rolling median over `window` "
                                                "updates, or an exponential moving average")
    window: int = Field(default=9, gt=0, description="updates in the rolling median")
    ema_alpha: float = Field(default=0.3, gt=0, le=1, description="weight of the newest score with ema")
    t_high: float = Field(default=0.7, ge=0, le=1, description="smoothed p(fake) at or above which a track "
                          "counts toward fake")
    t_low: float = Field(default=0.3, ge=0, le=1, description="smoothed p(fake) at or below which a track "
                         "counts toward real")
    k: int = Field(default=3, gt=0, description="consecutive updates needed to change verdict")

    @model_validator(mode="after")
    def _thresholds(self) -> "VerdictPolicy":
        if self.t_low > self.t_high:
            raise ValueError(f"t_low ({self.t_low}) must not exceed t_high ({self.t_high})")
        return self


class AlertPolicy(BaseModel):
    """The alert lifecycle's pace and the webhooks every alert goes to."""

    model_config = ConfigDict(extra="forbid")

    update_every_s: float = Field(default=5.0, gt=0, description="least time between updates of one alert")
    webhooks: list[WebhookConfig] = Field(default=[], description="HTTP receivers each alert is POSTed to, "
                                          "signed, at least once (stream.live.bus.channels.webhook)")

    @field_validator("webhooks")
    @classmethod
    def _unique_webhooks(cls, hooks: list[WebhookConfig]) -> list[WebhookConfig]:
        return unique_webhooks(hooks)

