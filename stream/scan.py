"""`scan`: score video files and still images, one verdict per input.

Path of the data: AVSource (or PIL for stills) -> sampled frames, batched -> FaceDetector -> IoUTracker ids ->
crops at each engine's size -> Engine.predict -> p(fake) per face-frame, fused across engines by the mean.
The video score is the mean over scored face-frames (DeepfakeBench's video-level convention).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from engines.base import Engine
from stream.faces import FaceDetector, IoUTracker, crop_faces, whole_frame
from stream.sources import AVSource, Frame, SourceError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
WHOLE_FRAME_TRACK = 0  # with --faces none the whole frame is one "face" with this track id

Label = Literal["fake", "real", "no-face", "error"]


class ScanOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fps: float = Field(default=5.0, gt=0, description="frames analysed per second of video")
    faces: Literal["mtcnn", "none"] = "mtcnn"
    batch_frames: int = Field(default=8, gt=0, description="frames sent to the detector at once")


@dataclass
class TrackScore:
    id: int
    frames: int
    score: float


@dataclass
class ScanResult:
    path: str
    label: Label
    score: float | None
    threshold: float
    frames_scored: int
    tracks: list[TrackScore]
    model: str
    engines: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "score": self.score,
            "threshold": self.threshold,
            "frames_scored": self.frames_scored,
            "tracks": [{"id": t.id, "frames": t.frames, "score": t.score} for t in self.tracks],
            "model": self.model,
            "engines": self.engines,
            "error": self.error,
        }


class _Scores:
    """Per-track and per-engine p(fake) lists gathered over one input."""

    def __init__(self, engine_names: Sequence[str]) -> None:
        self.by_track: dict[int, list[float]] = {}
        self.by_engine: dict[str, list[float]] = {n: [] for n in engine_names}
        self.fused: list[float] = []

    def add(self, track_ids: Sequence[int], per_engine: dict[str, np.ndarray]) -> None:
        fused = np.mean(np.stack(list(per_engine.values())), axis=0)
        for name, scores in per_engine.items():
            self.by_engine[name].extend(float(s) for s in scores)
        for tid, s in zip(track_ids, fused):
            self.by_track.setdefault(tid, []).append(float(s))
            self.fused.append(float(s))


class Scanner:
    """Scores inputs with one or more frame engines; several engines are fused by the mean of their p(fake)."""

    def __init__(
        self,
        engines: Sequence[Engine],
        thresholds: Sequence[float],
        options: ScanOptions | None = None,
        detector: FaceDetector | None = None,
    ) -> None:
        if not engines:
            raise ValueError("scan needs at least one engine")
        temporal = [e.name for e in engines if e.spec.frames > 1]
        if temporal:
            raise ValueError(f"scan scores single frames; clip engines are not supported here: {temporal}")
        self.engines = list(engines)
        self.threshold = float(np.mean(thresholds))
        self.options = options or ScanOptions()
        if self.options.faces == "mtcnn" and detector is None:
            detector = FaceDetector()
        self.detector = detector
        self.model_name = "+".join(e.name for e in self.engines)

    def scan(self, path: str | Path, on_frames: Callable[[int], None] | None = None) -> ScanResult:
        """Score one input. Failures become an `error` result; nothing raises for a bad file."""
        path = Path(path)
        scores = _Scores([e.name for e in self.engines])
        try:
            tracker = IoUTracker()
            for batch in _batched(_frames_of(path, self.options.fps), self.options.batch_frames):
                self._score_batch(batch, tracker, scores)
                if on_frames:
                    on_frames(len(batch))
        except (SourceError, OSError, UnidentifiedImageError) as exc:
            return self._result(path, scores, error=str(exc))
        return self._result(path, scores)

    def _score_batch(self, frames: list[Frame], tracker: IoUTracker, scores: _Scores) -> None:
        images = [f.image for f in frames]
        if self.options.faces == "none":
            track_ids = [WHOLE_FRAME_TRACK] * len(images)
            crops_for = lambda spec: np.concatenate([whole_frame(im, spec.size) for im in images])  # noqa: E731
        else:
            assert self.detector is not None
            detections = self.detector.detect(images)
            track_ids = [tid for faces in detections for tid in tracker.update([d.box for d in faces])]
            if not track_ids:
                return

            def crops_for(spec):
                return np.concatenate([
                    crop_faces(im, [d.box for d in faces], spec.size, spec.margin)
                    for im, faces in zip(images, detections)
                ])

        cache: dict[tuple[int, float], np.ndarray] = {}
        per_engine = {}
        for engine in self.engines:
            key = (engine.spec.size, engine.spec.margin)
            if key not in cache:
                cache[key] = crops_for(engine.spec)
            per_engine[engine.name] = engine.predict(cache[key])
        scores.add(track_ids, per_engine)

    def _result(self, path: Path, scores: _Scores, error: str | None = None) -> ScanResult:
        tracks = [
            TrackScore(id=tid, frames=len(s), score=float(np.mean(s))) for tid, s in sorted(scores.by_track.items())
        ]
        score = float(np.mean(scores.fused)) if scores.fused else None
        if error is not None:
            label: Label = "error"
        elif score is None:
            label = "no-face"
        else:
            label = "fake" if score >= self.threshold else "real"
        return ScanResult(
            path=str(path),
            label=label,
            score=score,
            threshold=self.threshold,
            frames_scored=len(scores.fused),
            tracks=tracks,
            model=self.model_name,
            engines={n: float(np.mean(s)) for n, s in scores.by_engine.items() if s},
            error=error,
        )


def _frames_of(path: Path, fps: float) -> Iterator[Frame]:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if not path.is_file():
            raise SourceError(f"{path}: no such file")
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise SourceError(f"{path}: cannot read as an image ({exc.__class__.__name__})") from exc
        yield Frame(image=image, pts=None, time=0.0, index=0, received=0.0)
        return
    yield from AVSource(path, sample_fps=fps).frames()


def _batched(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
