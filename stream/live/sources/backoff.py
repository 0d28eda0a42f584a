"""Reconnect delays: exponential, capped, with jitter so many cameras that fail together do not retry in step."""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field


class Backoff(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_s: float = Field(default=0.25, gt=0)
    factor: float = Field(default=2.0, ge=1.0)
    max_s: float = Field(default=2.0, gt=0, description="cap: a returning camera is picked up within this")
    jitter: float = Field(default=0.2, ge=0.0, le=1.0, description="± fraction of the delay drawn at random")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before reconnect attempt `attempt` (0-based)."""
        base = min(self.max_s, self.initial_s * self.factor ** attempt)
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))
