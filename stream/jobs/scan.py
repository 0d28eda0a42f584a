"""`scan`: score video files and still images, one verdict per input.

Path of the data: AVSource (or PIL for stills) -> sampled frames, batched -> FaceDetector -> IoUTracker ids ->
crops at each engine's size -> Engine.predict -> p(fake) per face-frame, fused across engines by the mean.
The video score is the mean over scored face-frames (DeepfakeBench's video-level convention).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from engines.base import Engine
from engines.calibration import Ensemble
from stream.live.faces import FaceDetector, IoUTracker, crop_faces, whole_frame
from stream.live.rings import TrackRings
from stream.live.faces.quality import FaceQuality, measure, sharpness
from stream.live.scoring import CropKey, Gate, Scorer
from stream.live.sources import AVSource, Frame, SourceError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
WHOLE_FRAME_TRACK = 0  # with --faces none the whole frame is one "face" with this track id
FRAME_ENGINE_FPS = 5.0  # default analysed rate when every engine scores single frames

Label = Literal["fake", "real", "no-face", "low-quality", "error"]
READ_ERRORS = (SourceError, OSError, UnidentifiedImageError)  # an unreadable input, reported per file


class ScanOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fps: float | None = Field(
        default=None, gt=0,
        description="frames analysed per second of video; default 5 for frame engines, every frame when a "
                    "clip engine runs (its clips are consecutive frames, as the cards trained them)")
    faces: Literal["mtcnn", "none"] = "mtcnn"
    batch_frames: int = Field(default=8, gt=0, description="frames sent to the detector at once")


@dataclass(frozen=True, slots=True)
class FaceFrame:
    """One sampled frame's faces: the frame's ordinal among the input's sampled frames, the faces' track ids and
    their crops, (faces, size, size, 3) uint8 per crop key."""

    index: int
    tracks: list[int]
    crops: dict[CropKey, np.ndarray]
    quality: list[FaceQuality] = field(default_factory=list)  # per face; empty: not measured (no gate)


@dataclass(frozen=True, slots=True)
class FaceBatch:
    """A batch of sampled frames (`frames` of them), the faces found in it and the tracks it ended."""

    frames: int
    faces: list[FaceFrame]
    expired: list[int] = field(default_factory=list)


@dataclass
class TrackScore:
    """One track's mean p(fake) over the face-frames its engines could judge. `gated` face-frames were below
    every engine's quality floor; a track with no other face-frame has no score, and `reason` says why."""

    id: int
    frames: int
    score: float | None
    gated: int = 0
    reason: str | None = None

    @property
    def verdict(self) -> str | None:
        return "low-quality" if self.score is None and self.gated else None


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
    reason: str | None = None  # why the label is low-quality
    baseline: dict | None = None  # with --baseline: the camera bar's verdict per track (stream.jobs.baseline)

    def to_json(self) -> dict:
        out = {
            "path": self.path,
            "label": self.label,
            "score": self.score,
            "threshold": self.threshold,
            "frames_scored": self.frames_scored,
            "tracks": [{"id": t.id, "frames": t.frames, "score": t.score, "gated": t.gated, "verdict": t.verdict,
                        "reason": t.reason} for t in self.tracks],
            "model": self.model,
            "engines": self.engines,
            "error": self.error,
            "reason": self.reason,
        }
        return out if self.baseline is None else {**out, "baseline": self.baseline}


class _Scores:
    """p(fake) per engine and track over one input. An engine's item is a face-frame or, for clip engines, a
    window of them. Fusion is the mean over engines of each engine's mean, per track and per video; with frame
    engines only this equals the mean over face-frames of the per-face-frame mean across engines."""

    def __init__(self, engine_names: Sequence[str]) -> None:
        self.items: dict[str, dict[int, list[float]]] = {n: {} for n in engine_names}
        self.face_frames: dict[int, int] = {}
        self.gated: dict[int, int] = {}
        self.reasons: dict[int, str] = {}  # the latest reason a track's face was not judged
        self.windowed: set[str] = set()

    def add_face(self, track: int, gate: Gate | None = None) -> None:
        self.face_frames[track] = self.face_frames.get(track, 0) + 1
        if gate is not None and gate.low_quality:
            self.gated[track] = self.gated.get(track, 0) + 1
            self.reasons[track] = gate.reason or "below the quality floor"

    def add(self, engine: str, tracks: Sequence[int], scores: np.ndarray) -> None:
        for t, s in zip(tracks, scores):
            self.items[engine].setdefault(t, []).append(float(s))

    def engine_scores(self) -> dict[str, float]:
        return {n: float(np.mean([s for v in by_track.values() for s in v]))
                for n, by_track in self.items.items() if by_track}

    def track_scores(self, fusion: Callable[[dict[str, float]], float | None]) -> list[TrackScore]:
        out = []
        for t, n in sorted(self.face_frames.items()):
            means = {e: float(np.mean(by_track[t])) for e, by_track in self.items.items() if t in by_track}
            gated = self.gated.get(t, 0)
            if means or gated:
                out.append(TrackScore(id=t, frames=n, score=fusion(means) if means else None, gated=gated,
                                      reason=None if means else self.reasons.get(t)))
        return out

    def completed(self, engines: Sequence[str]) -> None:
        """Engines that completed a window (whether or not the gate let them judge it)."""
        self.windowed.update(engines)

    def unscored_engines(self) -> list[str]:
        """Engines whose windows never filled (too short an input), as opposed to windows the gate refused."""
        return [n for n in self.items if n not in self.windowed]


class Scanner:
    """Scores inputs with one or more engines (frame or clip), fused by the mean of their p(fake)."""

    def __init__(
        self,
        engines: Sequence[Engine],
        thresholds: Sequence[float],
        options: ScanOptions | None = None,
        detector: FaceDetector | None = None,
        ensemble: Ensemble | None = None,
        calibrated: bool = True,
    ) -> None:
        if not engines:
            raise ValueError("scan needs at least one engine")
        self.engines = list(engines)
        self.scorer = Scorer(self.engines, ensemble, calibrated)
        self.windows = self.scorer.windows
        self.threshold = float(np.mean(thresholds))
        self.options = options or ScanOptions()
        self.fps = self.options.fps
        if self.fps is None and all(e.spec.frames == 1 for e in self.engines):
            self.fps = FRAME_ENGINE_FPS
        if self.options.faces == "mtcnn" and detector is None:
            detector = FaceDetector()
        self.detector = detector
        self.model_name = "+".join(e.name for e in self.engines)

    @property
    def crop_keys(self) -> list[CropKey]:
        """Every (size, margin) some engine's crops are cut at, in a stable order."""
        return self.scorer.crop_keys

    def scan(self, path: str | Path, on_frames: Callable[[int], None] | None = None) -> ScanResult:
        """Score one input. Failures become an `error` result; nothing raises for a bad file."""
        return self.score(path, self.face_batches(path), on_frames)[0]

    def face_batches(self, path: str | Path) -> Iterator[FaceBatch]:
        """Decode, detect and track one input, a batch of sampled frames at a time; each batch carries its faces
        cut at every crop key. Separate from scoring so `eval` can cache the crops and skip this step next time.
        Raises the `READ_ERRORS` for an unreadable input."""
        return self.face_batches_of(_frames_of(Path(path), self.fps))

    def face_batches_of(self, frames: Iterable[Frame]) -> Iterator[FaceBatch]:
        """`face_batches` of frames already sampled (a live source's, a stretch of a file)."""
        tracker = IoUTracker()
        keys = self.crop_keys
        first = 0
        for batch in _batched(iter(frames), self.options.batch_frames):
            faces = [FaceFrame(first + i, track_ids, {key: cut(*key) for key in keys}, quality)
                     for i, (track_ids, cut, quality) in enumerate(self._faces([f.image for f in batch], tracker))
                     if track_ids]
            yield FaceBatch(frames=len(batch), faces=faces, expired=list(tracker.expired))
            first += len(batch)

    def score(self, path: str | Path, batches: Iterable[FaceBatch],
              on_frames: Callable[[int], None] | None = None) -> tuple[ScanResult, list[dict[str, float]]]:
        """Score the face batches of one input (fresh from `face_batches`, or replayed from a cache).

        Returns the result and, per face in order, the p(fake) of each engine whose item that face completed
        (every engine for frame engines; a clip engine only on the face that completes one of its windows)."""
        path = Path(path)
        scores = _Scores([e.name for e in self.engines])
        per_face: list[dict[str, float]] = []
        rings = self.scorer.track_rings()
        try:
            for batch in batches:
                per_face += self._score_faces(batch.faces, rings, scores)
                rings.expire(batch.expired)
                if on_frames:
                    on_frames(batch.frames)
        except READ_ERRORS as exc:
            return self._result(path, scores, error=str(exc)), per_face
        return self._result(path, scores), per_face

    def _faces(self, images: list[np.ndarray], tracker: IoUTracker
               ) -> list[tuple[list[int], Callable, list[FaceQuality]]]:
        """Per frame: the track ids of its faces, a function cutting their crops at (size, margin), and each
        face's quality (its size and sharpness, measured on the `quality_key` crop)."""
        qsize, qmargin = self.scorer.quality_key
        if self.options.faces == "none":
            return [([WHOLE_FRAME_TRACK], lambda size, margin, im=im: whole_frame(im, size),
                     [FaceQuality(float(min(im.shape[:2])), sharpness(whole_frame(im, qsize)[0]))]) for im in images]
        assert self.detector is not None
        out = []
        for im, faces in zip(images, self.detector.detect(images)):
            boxes = [d.box for d in faces]
            quality = [measure(b, c) for b, c in zip(boxes, crop_faces(im, boxes, qsize, qmargin))]
            out.append((tracker.update(boxes), lambda size, margin, im=im, b=boxes: crop_faces(im, b, size, margin),
                        quality))
        return out

    def _score_faces(self, faces: Sequence[FaceFrame], rings: TrackRings, scores: _Scores) -> list[dict[str, float]]:
        """Score one batch's faces through the shared scoring core. Returns each face's p(fake) per engine that
        scored a window it completed."""
        items = []
        for face in faces:
            for j, tid in enumerate(face.tracks):
                gate = self.scorer.gate(face.quality[j]) if face.quality else None
                scores.add_face(tid, gate)
                items.append((tid, gate, rings.of(tid), {key: c[j] for key, c in face.crops.items()}))
        per_face = self.scorer.score((r, crops) for _, _, r, crops in items)
        judged = []
        for (tid, gate, _, _), got in zip(items, per_face):
            scores.completed(got)
            got = gate.keep(got) if gate is not None else got  # engines below their floor do not judge
            for name, p in got.items():
                scores.add(name, [tid], [p])
            judged.append(got)
        return judged

    def _result(self, path: Path, scores: _Scores, error: str | None = None) -> ScanResult:
        tracks = scores.track_scores(self.scorer.fuse)
        per_engine = scores.engine_scores()
        face_frames = sum(scores.face_frames.values())
        if error is None and face_frames and scores.unscored_engines():
            longest = max(scores.face_frames.values())
            error = "; ".join(
                f"too short for {n}: it needs {self.windows[n].length} face-frames of one face, "
                f"the longest track has {longest}" for n in scores.unscored_engines())
        score = self.scorer.fuse(per_engine) if per_engine and error is None else None
        reason = None
        if error is not None:
            label: Label = "error"
        elif score is None and scores.gated:
            label = "low-quality"
            reason = next(iter(scores.reasons.values()))
        elif score is None:
            label = "no-face"
        else:
            label = "fake" if score >= self.threshold else "real"
        return ScanResult(
            path=str(path),
            label=label,
            score=score,
            threshold=self.threshold,
            frames_scored=face_frames,
            tracks=tracks,
            model=self.model_name,
            engines=per_engine,
            error=error,
            reason=reason,
        )


def _frames_of(path: Path, fps: float | None) -> Iterator[Frame]:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if not path.is_file():
            raise SourceError(f"{path}: no such file")
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise SourceError(f"{path}: cannot read as an image ({exc.__class__.__name__})") from exc
        yield Frame.of(image=image, pts=None, time=0.0, index=0, received=0.0)
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
