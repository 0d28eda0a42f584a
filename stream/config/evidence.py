"""Evidence settings: the per-stream recording ring, the alert recording's pre- and post-roll, retention, and how
a cluster node's evidence reaches the gateway."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SharedEvidencePolicy(BaseModel):
    """A cluster node's evidence, shared through Redis (stream/live/bus/redis_evidence.py): each alert's files are
    uploaded in chunks once written, every key with a time to live, and the gateway copies a file into its own
    evidence folder the first time it is asked for it. The caps bound Redis's memory, at the price of what
    cannot be reached from the gateway: a file over the cap, or one asked for after `ttl_s`, stays on its node
    only (until that node's retention deletes it)."""

    model_config = ConfigDict(extra="forbid")

    max_alert_bytes: int = Field(default=64 << 20, gt=0, description="most bytes of one alert's files uploaded "
                                 "into Redis; a file that would go over is refused (named, with the reason, in the "
                                 "gateway's 404) and stays on its node. The manifest, overlay track and face "
                                 "files go first")
    chunk_bytes: int = Field(default=1 << 20, gt=0, le=64 << 20, description="size of one Redis value of an "
                             "uploaded file: larger values block Redis for longer per command")
    ttl_s: float = Field(default=7 * 86400, gt=0, description="seconds an uploaded file stays in Redis; with "
                         "`maxmemory-policy volatile-ttl`, Redis evicts these before anything longer-lived")


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
    shared: SharedEvidencePolicy = Field(default_factory=SharedEvidencePolicy, description="on a cluster "
                                         "(`serve --ray`): how the nodes share their evidence with the gateway "
                                         "through Redis")

    @model_validator(mode="after")
    def _clip_holds_preroll(self) -> "EvidencePolicy":
        if self.record and self.max_clip_s <= self.pre_capture_s:
            raise ValueError(f"max_clip_s ({self.max_clip_s}) must exceed pre_capture_s ({self.pre_capture_s})")
        return self
