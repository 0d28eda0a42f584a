"""Scheduler settings: the load governor's thresholds and steps."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_fps: float = Field(default=1.0, gt=0, description="analysed-rate floor before whole streams are shed")
    high_load: float = Field(default=0.9, gt=0, le=1, description="busy fraction above which rates are lowered")
    recover_load: float = Field(default=0.8, gt=0, le=1,
                                description="rates recover when the busy fraction predicted after the step stays "
                                            "below this")
    step_down: float = Field(default=0.8, gt=0, lt=1)
    step_up: float = Field(default=1.1, gt=1)
    adapt_period_s: float = Field(default=1.0, gt=0)
    load_smoothing: float = Field(default=0.5, gt=0, le=1,
                                  description="weight of the newest period in the smoothed load, so one slow "
                                              "second (a GC, a noisy neighbour) does not lower every rate")
    status_period_s: float = Field(default=1.0, gt=0)
