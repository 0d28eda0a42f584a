"""Scheduler settings: the load governor's thresholds and steps."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DetectionPolicy(BaseModel):
    """When the scheduler runs full-frame MTCNN, and what it does in between.

    Full-frame detection runs every `detect_every` analysed frames of a stream, and at once when the stream has no
    track or a track could not be re-located. In between, each tracked face is re-located by MTCNN on a square crop
    `relocate_scale` times its last box, resized to `relocate_size`: all the crops of a pass form one small batch,
    far cheaper than the full frames' pyramids, and they keep the box, probability and 5 landmarks.

    Trade-off: a face that enters the picture waits up to `detect_every - 1` analysed frames for its first box
    (at 5 analysed fps and detect_every 3, at most 0.4 s), and a face that moves more than about half its size
    between analysed frames is lost and found again by the next full detection. `detect_every: 1` is the old
    policy: full detection on every analysed frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detect_every: int = Field(default=3, ge=1, description="analysed frames per full-frame detection")
    relocate_scale: float = Field(default=2.0, ge=1.2, le=4.0, description="crop side / last box side")
    relocate_size: int = Field(default=96, ge=48, le=320, description="pixels of the re-location crops")
    stagger: bool = Field(
        default=True, description="spread the streams' full detections evenly over the passes: a pass with fewer "
        "than its share runs some early, once, for streams whose full detections crowd a later pass "
        "(stream/live/scheduler/detection.py); never later than detect_every. false: every stream's falls when its "
        "interval is up, so streams started together detect in the same pass (the setting before it)")


class SchedulerConfig(BaseModel):
    """The scheduler loop: under load the analysed rates are lowered, the least important streams' first (a stream
    someone watches, then a higher `priority`, keeps its rate longest; `governor.py`), down to `min_fps`, and only
    then are whole streams paused, the least important first."""

    model_config = ConfigDict(extra="forbid")

    min_fps: float = Field(default=1.0, gt=0, description="analysed-rate floor before whole streams are shed")
    high_load: float = Field(default=0.9, gt=0, le=1, description="busy fraction above which rates are lowered")
    recover_load: float = Field(default=0.8, gt=0, le=1,
                                description="rates recover when the busy fraction predicted after the step stays "
                                            "below this")
    step_down: float = Field(default=0.8, gt=0, lt=1, description="factor applied to every rate when the load "
                             "is above high_load")
    step_up: float = Field(default=1.1, gt=1, description="factor applied to every rate when the load allows")
    adapt_period_s: float = Field(default=1.0, gt=0, description="seconds between the governor's decisions")
    load_smoothing: float = Field(default=0.5, gt=0, le=1,
                                  description="weight of the newest period in the smoothed load, so one slow "
                                              "second (a GC, a noisy neighbour) does not lower every rate")
    status_period_s: float = Field(default=1.0, gt=0, description="seconds between status messages")
    detection: DetectionPolicy = Field(default=DetectionPolicy(), description="when full-frame detection runs, "
                                       "and face re-location in between")
    pipeline: Literal["serial", "overlapped"] = Field(
        default="overlapped",
        description="overlapped (default): full-frame detection of the next pass runs on a worker thread while this "
                    "pass is scored (see stream/live/scheduler/pipelines.py); serial: detect, then score, one pass "
                    "at a time (the setting before issue 25)")
    threads: Literal["shared", "split"] = Field(
        default="shared",
        description="how the overlapped stages' thread pools use the cores (stream/live/scheduler/threads.py): "
                    "shared (default): each stage may use every core, so an idle stage's core serves the other; "
                    "split: the cores divided between them (the plan before issue 25)")
    detect_workers: int | None = Field(
        default=None, ge=1,
        description="threads that detect one pass's streams at once with the overlapped pipeline, each a share of "
                    "the streams (stream/live/scheduler/pipelines.py). Default: the thread plan's, one per core "
                    "with the shared plan (stream/live/scheduler/threads.py); 1: the whole pass in one batch on one "
                    "thread (the setting before it)")
    load: Literal["cores", "process", "stage"] = Field(
        default="cores",
        description="what the governor calls load (stream/live/scheduler/governor.py). cores (default): the busiest "
                    "stage's busy share, but no more than the share of the machine's CPU time in use (all "
                    "processes): the pipeline is full and so are the cores; process: this process's CPU time per "
                    "core; stage: the busiest stage's busy share alone (the measure before issue 25)")
