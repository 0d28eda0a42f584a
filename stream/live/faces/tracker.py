"""An IoU tracker: gives each face a stable id across sampled frames, so scores can be kept per face."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class TrackerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    iou_threshold: float = Field(default=0.3, gt=0.0, le=1.0, description="least IoU to continue a track")
    max_missed: int = Field(default=5, ge=0, description="updates a track survives without a matching face")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) boxes in (x1, y1, x2, y2)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class Track:
    id: int
    box: np.ndarray
    hits: int = 1
    missed: int = 0


@dataclass
class IoUTracker:
    """Greedy IoU matching of detections to live tracks, best pairs first.

    `update` returns the track id of each detection, in the detections' order; ids are never reused.
    `expired` lists the tracks dropped by the last update, so per-track state (rings, scores) can be freed.
    """

    config: TrackerConfig = field(default_factory=TrackerConfig)
    tracks: dict[int, Track] = field(default_factory=dict)
    expired: list[int] = field(default_factory=list)
    _next_id: int = 1

    def update(self, boxes: Sequence[np.ndarray]) -> list[int]:
        live = list(self.tracks.values())
        dets = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        ious = iou_matrix(np.array([t.box for t in live], dtype=np.float32).reshape(-1, 4), dets)
        assigned: list[int | None] = [None] * len(dets)
        used_tracks: set[int] = set()
        for flat in np.argsort(-ious, axis=None, kind="stable"):
            ti, di = np.unravel_index(flat, ious.shape)
            if ious[ti, di] < self.config.iou_threshold:
                break
            if ti in used_tracks or assigned[di] is not None:
                continue
            track = live[ti]
            track.box, track.hits, track.missed = dets[di], track.hits + 1, 0
            assigned[di] = track.id
            used_tracks.add(ti)
        self.expired = []
        for ti, track in enumerate(live):
            if ti not in used_tracks:
                track.missed += 1
                if track.missed > self.config.max_missed:
                    del self.tracks[track.id]
                    self.expired.append(track.id)
        for di, tid in enumerate(assigned):
            if tid is None:
                tid = self._next_id
                self._next_id += 1
                self.tracks[tid] = Track(id=tid, box=dets[di])
                assigned[di] = tid
        return [int(t) for t in assigned]  # type: ignore[arg-type]
