"""Per-stream and per-track state of the live scheduler, each held in one record and freed in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream.live.faces import IoUTracker
from stream.live.faces.quality import FaceQuality
from stream.live.rings import CropRing, WindowRings
from stream.live.scoring import Gate
from stream.live.sources.live import StreamSource
from stream.live.stats import LatencyMeter, RateMeter
from stream.live.verdicts.policy import TrackVerdict

EVIDENCE_CROP = (224, 0.3)  # (size, margin) of the face crops kept for alert snapshots and clips
EVIDENCE_FRAMES = 16  # analysed face-frames per track kept for the alert clip


@dataclass(eq=False)
class Track:
    """One face track: its engines' rings, its latest score per engine, its rolling verdict and the recent crops
    kept as alert evidence. Dropping the record frees all of it. It is what the judge judges
    (`stream.live.verdicts.judge.Judged`)."""

    id: int
    stream: str  # the name of the stream it is in
    rings: WindowRings
    verdict: TrackVerdict
    evidence: CropRing
    scores: dict[str, float] = field(default_factory=dict)
    box: np.ndarray | None = None  # its latest box, where re-location looks for it next
    quality: FaceQuality | None = None  # of its latest face-frame
    gate: Gate | None = None  # which engines may judge that face-frame
    seen_at: float | None = None  # source time (Frame.time) of its latest face-frame


@dataclass(eq=False)
class LiveStream:
    """One stream as the scheduler holds it: its source, tracker, tracks, pacing and meters."""

    source: StreamSource
    order: int
    tracker: IoUTracker = field(default_factory=IoUTracker)
    tracks: dict[int, Track] = field(default_factory=dict)
    next_due: float = 0.0
    shed: bool = False
    analysed: RateMeter = field(default_factory=RateMeter)
    latency: LatencyMeter = field(default_factory=LatencyMeter)
    gated_faces: int = 0  # face-frames judged low-quality
    since_full: int = 0  # analysed frames since the last full-frame detection
    lost: bool = False  # a track could not be re-located: detect the full frame next
    full_detections: int = 0

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def analysed_fps(self) -> float:
        return self.source.analysed_fps

    @property
    def priority(self) -> int:
        return self.source.priority

    @property
    def achieved_fps(self) -> float:
        """Its measured analysed rate now."""
        return self.analysed.rate()

    @property
    def attention(self) -> int:
        return self.source.attention

    def drop(self, track_ids) -> list[Track]:
        """Forget expired tracks; returns their records (for ending their alerts)."""
        return [t for t in (self.tracks.pop(i, None) for i in track_ids) if t is not None]
