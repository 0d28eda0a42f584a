"""Evidence settings: the per-stream recording ring, the alert recording's pre- and post-roll, and retention."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EvidencePolicy(BaseModel):
    """What is kept around every alert and for how long.

    The ring holds the source's own compressed packets, so `ring_max_bytes` bounds memory per stream whatever
    the camera's bitrate: a camera whose GOP alone exceeds it gets no pre-roll rather than unbounded memory."""

    model_config = ConfigDict(extra="forbid")

    record: bool = Field(default=True, description="keep a recording ring per stream and write a full-frame "
                         "recording around every alert")
    pre_capture_s: float = Field(default=5.0, ge=0, description="seconds of video kept before the first frame "
                                 "judged fake (the ring starts at the keyframe at or before that)")
    post_capture_s: float = Field(default=5.0, ge=0, description="seconds recorded after the alert ends")
    max_clip_s: float = Field(default=120.0, gt=0, description="longest recording of one alert, pre-roll included")
    ring_max_bytes: int = Field(default=64 << 20, gt=0, description="memory cap of one stream's recording ring")
    burn_in: bool = Field(default=False, description="also write recording_burned.mp4 with the boxes drawn in")
    max_alerts: int = Field(default=500, gt=0, description="evidence folders kept; the oldest are deleted")
    max_bytes: int = Field(default=1 << 30, gt=0, description="total evidence size kept; the oldest are deleted")
    max_age_days: float | None = Field(default=None, gt=0, description="evidence older than this is deleted")
    clip_fps: float = Field(default=5.0, gt=0, description="playback rate of the face-crop strip (the analysed rate)")

    @model_validator(mode="after")
    def _clip_holds_preroll(self) -> "EvidencePolicy":
        if self.record and self.max_clip_s <= self.pre_capture_s:
            raise ValueError(f"max_clip_s ({self.max_clip_s}) must exceed pre_capture_s ({self.pre_capture_s})")
        return self
