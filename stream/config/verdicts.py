"""Judging settings: the verdict policy (fusion weights, smoothing, hysteresis, per-camera baselines) and alerts
(evidence: evidence.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stream.config.channels import WebhookConfig, unique_webhooks
from stream.config.evidence import EvidencePolicy  # noqa: F401  (re-exported: its old home)


class BaselinePolicy(BaseModel):
    """How a camera's baseline of known-real footage turns the global bar into a camera bar
    (stream/live/verdicts/baseline.py has the rule and its guarantee).

    Trade-offs: a smaller `alpha` promises fewer false alarms but needs more footage before the conformal bound
    is finite (n effective samples >= 1/alpha - 1); below that the bar is the bounded fallback. A higher `floor`
    keeps a camera learned on a quiet stretch from alerting on faces the model itself calls probably real, at the
    cost of missing fakes that a quiet camera would show as a small rise. A larger `ceiling_margin` tolerates more
    drift of real footage above what was learned, at the cost of letting a fake score that much higher before it
    alerts.

    `direction` is a named policy of what a baseline flags. "above" (the default): only faces held above the
    camera's normal, which is what the detector calls more fake than this camera's real footage. "both" (opt-in,
    experimental): also faces held below a lower bar, called "unlike this camera": a departure from this camera's
    normal, not the detector seeing a fake. It catches a swap the detector scores *lower* than the camera's real
    footage, at the cost of flagging whatever else moves the score down (another person, new light, a codec
    change), and of splitting alpha between the two tails (each bar keeps alpha / 2). `floor_margin` mirrors
    `ceiling_margin` below: a larger one tolerates more downward drift of real footage, and lets a swap score
    that much lower before it is flagged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(default=0.01, gt=0, lt=1,
                         description="false-alarm rate the conformal threshold keeps for exchangeable blocks of "
                                     "real footage")
    block: int | None = Field(default=None, gt=0,
                              description="smoothed updates per effective sample (a block); default the median "
                                          "window, or about 2/ema_alpha updates for EMA smoothing")
    min_effective: int = Field(default=2, ge=2,
                               description="fewest effective samples (blocks) a baseline is learned from; fewer "
                                           "is refused with the seconds still needed")
    floor: float = Field(default=0.5, gt=0, lt=1,
                         description="lowest p(fake) a camera bar may have: a quiet camera's bar drops from "
                                     "t_high at most to here")
    ceiling_margin: float = Field(default=1.5, gt=0,
                                  description="logits above the highest smoothed score of the baseline at which "
                                              "a face always alerts (when that is above t_high)")
    direction: Literal["above", "both"] = Field(
        default="above", description="what a camera bar flags: faces held above the camera's normal (above), or "
                                     "also faces held below a lower bar, called 'unlike this camera' (both, "
                                     "experimental: alpha is split between the two bars)")
    floor_margin: float = Field(default=1.5, gt=0,
                                description="with direction both: logits below the lowest smoothed score of the "
                                            "baseline at which a face is always called unlike this camera")
    learn_on_fake: bool = Field(default=False,
                                description="learn from a stretch in which the global bar already called a face "
                                            "fake (a camera known to be noisy); refused by default")


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
    t_under: float | None = Field(default=None, gt=0, lt=1,
                                  description="smoothed p(fake) at or below which a track counts toward 'unlike "
                                              "this camera' (a fake verdict); set by a camera baseline learned "
                                              "with baseline.direction both, null (no lower bar) otherwise")
    t_under_release: float | None = Field(default=None, gt=0, lt=1,
                                          description="with t_under: smoothed p(fake) at or above which a track "
                                                      "counts toward real again (the band between is uncertain); "
                                                      "null: t_under itself")
    baseline: BaselinePolicy = Field(default=BaselinePolicy(),
                                     description="how a camera's baseline of known-real footage sets its bar")

    @model_validator(mode="after")
    def _thresholds(self) -> "VerdictPolicy":
        if self.t_low > self.t_high:
            raise ValueError(f"t_low ({self.t_low}) must not exceed t_high ({self.t_high})")
        if self.t_under is not None and self.t_under >= self.t_low:
            raise ValueError(f"t_under ({self.t_under}) must be below t_low ({self.t_low}): a track counts toward "
                             "real between the two")
        if self.t_under_release is not None and not (self.t_under or 1.0) <= self.t_under_release <= self.t_low:
            raise ValueError(f"t_under_release ({self.t_under_release}) must lie between t_under ({self.t_under}) "
                             f"and t_low ({self.t_low})")
        if self.baseline.floor > self.t_high:
            raise ValueError(f"baseline.floor ({self.baseline.floor}) must not exceed t_high ({self.t_high}): a "
                             "baseline's floor is where it may lower the bar to")
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

