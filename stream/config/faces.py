"""Face detector settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DetectorConfig(BaseModel):
    """MTCNN settings. `min_prob` drops low-confidence faces after the cascade's own thresholds."""

    model_config = ConfigDict(extra="forbid")

    min_face_size: int = Field(default=40, gt=0)
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_prob: float = Field(default=0.9, ge=0.0, le=1.0)
    max_side: int = Field(default=640, gt=0, description="frames are downscaled to this longest side to detect")
    device: str = "cpu"
