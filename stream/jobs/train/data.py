"""Training samples from a labelled dataset: face crops through `eval`'s pipeline and crop cache, sampled per
video, with optional self-blended pseudo-fakes (SBI).

Faces come from `Scanner.face_batches` (the decoder, MTCNN, IoU tracker and crop geometry `scan` uses) and are
cached by `stream.jobs.crop_cache.CropCache`, so a model trains on exactly the crops it will be shown, and a dataset
measured with `eval` at the same settings is not decoded again. Only pixels and folder labels are used: no part
of a path reaches a model.

Frame kinds take up to `per_video` face-frames evenly spread over each video. Clip kinds take windows of `length`
consecutive face-frames of one track (a folder of frame images counts as one track, in file order), up to
`per_video` of them, evenly spread.

Pseudo-fakes are made from real faces only (`stream.jobs.sbi.self_blend`), one per real sample. Each keeps its source's
video group, so it always lands on the same side of the train/validation split. A clip is blended with one seed
for all its frames, so the colour and geometry jitter stay constant over time, as in a real swap. `static` blends
once (for kinds whose inputs are cached features); `online` keeps the landmarks so the loader re-blends each epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import Literal

import numpy as np

from engines.base import Engine, InputSpec
from stream.jobs.datasets import FAKE, REAL, Dataset, DatasetItem, discover
from stream.jobs.crop_cache import CropCache, FaceCrops
from stream.jobs.sbi import self_blend
from stream.jobs.scan import IMAGE_SUFFIXES, READ_ERRORS, Scanner, ScanOptions
from stream.jobs.train import TrainError
from stream.jobs.train.progress import ExtractionProgress, say
from stream.jobs.train.seed import SBI_STATIC

SBI_METHOD = "sbi"
SBI_HINT = "; pass --sbi to train on self-blended pseudo-fakes made from the real faces"
LANDMARK_BATCH = 32
MIN_LANDMARK_FACE = 12  # MTCNN's smallest face when looking for landmarks in a crop
MAX_REPORTED_ERRORS = 5
# Five points (eyes, nose, mouth corners) as fractions of the face box: ArcFace's alignment template on its
# 112-pixel canvas, which an MTCNN box roughly is. Used for crops where MTCNN finds no central face.
FACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                          [70.7299, 92.2041]]) / 112.0
Sbi = Literal["static", "online"] | None


@dataclass(frozen=True)
class CropSpec:
    size: int
    margin: float
    fps: float | None  # None: every frame
    faces: Literal["mtcnn", "none"] = "mtcnn"
    length: int = 1  # 1: single face-frames; T: clips of T consecutive face-frames of one track
    per_video: int | None = None  # face-frames or clips kept per video; None keeps all


@dataclass
class Samples:
    """Parallel arrays, one row per sample (a face-frame or a clip)."""

    x: np.ndarray  # uint8 (N, S, S, 3) or (N, T, S, S, 3), or features after a transform
    labels: np.ndarray  # (N,) 1 = fake
    groups: np.ndarray  # (N,) the video (dataset group) each sample comes from
    methods: np.ndarray  # (N,) manipulation method, "real", or "sbi"
    landmarks: np.ndarray | None = None  # (N, [T,] 5, 2) for online SBI; NaN for fakes

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> Samples:
        lm = None if self.landmarks is None else self.landmarks[rows]
        return Samples(self.x[rows], self.labels[rows], self.groups[rows], self.methods[rows], lm)

    def counts(self) -> dict[str, int]:
        return {"samples": len(self), "real": int(np.sum(self.labels == REAL)),
                "fake": int(np.sum(self.labels == FAKE)), "pseudo_fakes": int(np.sum(self.methods == SBI_METHOD)),
                "videos": len(set(self.groups.tolist()))}

    @staticmethod
    def concat(parts: Sequence[Samples]) -> Samples:
        with_lm = any(p.landmarks is not None for p in parts)
        lms = [p.landmarks if p.landmarks is not None or not with_lm else _no_landmarks(p.x) for p in parts]
        return Samples(np.concatenate([p.x for p in parts]), np.concatenate([p.labels for p in parts]),
                       np.concatenate([p.groups for p in parts]), np.concatenate([p.methods for p in parts]),
                       np.concatenate(lms) if with_lm else None)


def _no_landmarks(x: np.ndarray) -> np.ndarray:
    return np.full((*x.shape[:-3], 5, 2), np.nan, dtype=np.float32)


def _samples(x: np.ndarray, label: int, group: str, method: str, landmarks: np.ndarray | None = None) -> Samples:
    n = len(x)
    return Samples(x, np.full(n, label, dtype=np.int64), np.full(n, group, dtype=object),
                   np.full(n, method, dtype=object), landmarks)


def load_dataset(root: Path, sbi: bool) -> Dataset:
    """`stream.jobs.datasets.discover`; with --sbi a dataset of reals only is accepted (its fakes are made)."""
    dataset = discover(root, require_fakes=False)
    if not sbi and all(i.label == REAL for i in dataset.items):
        raise TrainError(f"{dataset.root}: no fake media ({len(dataset.items)} real files){SBI_HINT}")
    return dataset


class _CropsOnly(Engine):
    """The Scanner cuts crops at its engines' specs; this stands for the model being trained, which it never runs."""

    def __init__(self, spec: CropSpec) -> None:
        self.name = "train"
        self.spec = InputSpec(size=spec.size, margin=spec.margin, frames=spec.length)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        raise NotImplementedError("crop extraction only")


def evenly(n: int, k: int | None) -> np.ndarray:
    """Up to k indices of range(n), evenly spread (first and last included)."""
    if k is None or n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))


def template_landmarks(size: int, margin: float) -> np.ndarray:
    """FACE_TEMPLATE placed in a crop cut by `stream.live.faces.crop` (face box centred, grown by `margin` each side)."""
    return ((margin + FACE_TEMPLATE) / (1 + 2 * margin) * size).astype(np.float32)


class Landmarker:
    """MTCNN's five landmarks of the central face in each crop (the crop is already a face, so this is cheap),
    else the template: SBI masks need to know where the eyes, nose and mouth are."""

    def __init__(self, size: int, margin: float, device: str) -> None:
        from stream.live.faces import DetectorConfig, FaceDetector

        self.size = size
        self.template = template_landmarks(size, margin)
        self.detector = FaceDetector(DetectorConfig(device=device, min_face_size=max(MIN_LANDMARK_FACE, size // 4),
                                                    max_side=size))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(-1, *x.shape[-3:])
        out = np.repeat(self.template[None], len(flat), axis=0)
        half, quarter = self.size / 2, self.size / 4
        for start in range(0, len(flat), LANDMARK_BATCH):
            for i, faces in enumerate(self.detector.detect(list(flat[start:start + LANDMARK_BATCH]))):
                central = [d for d in faces if abs((d.box[0] + d.box[2]) / 2 - half) < quarter
                           and abs((d.box[1] + d.box[3]) / 2 - half) < quarter]
                if central:
                    out[start + i] = max(central, key=lambda d: d.prob).landmarks
        return out.reshape(*x.shape[:-3], 5, 2)


def blend(x: np.ndarray, landmarks: np.ndarray, keys: Sequence[int]) -> np.ndarray:
    """A pseudo-fake of one sample (a crop, or a clip blended with the same draws on every frame)."""
    if x.ndim == 3:
        return self_blend(x, landmarks, np.random.default_rng(list(keys))).image
    return np.stack([self_blend(f, lm, np.random.default_rng(list(keys))).image for f, lm in zip(x, landmarks)])


def with_pseudo_fakes(s: Samples, seed: int, stream: int) -> Samples:
    """`s` plus one fixed pseudo-fake per real sample (needs `s.landmarks`)."""
    reals = np.flatnonzero(s.labels == REAL)
    if not len(reals):
        return s
    assert s.landmarks is not None, "pseudo-fakes need landmarks"
    fakes = np.stack([blend(s.x[i], s.landmarks[i], (seed, stream, int(i))) for i in reals])
    made = Samples(fakes, np.full(len(reals), FAKE, dtype=np.int64), s.groups[reals],
                   np.full(len(reals), SBI_METHOD, dtype=object), _no_landmarks(fakes))
    return Samples.concat([s, made])


def _face_crops(item: DatasetItem, scanner: Scanner, cache: CropCache | None, progress: ExtractionProgress,
                errors: list[tuple[Path, str]]) -> FaceCrops | None:
    """`eval`'s cached crops of one file, extracting (and caching) them on a miss; None if it is unreadable."""
    try:
        entry = cache.entry(item.path) if cache is not None else None
        crops = cache.load(entry) if cache is not None and entry is not None else None
        if crops is None:
            crops = FaceCrops.extract(scanner, item.path, progress)
            if cache is not None and entry is not None:
                cache.save(entry, crops)
        return crops
    except READ_ERRORS as exc:
        errors.append((item.path, str(exc).removeprefix(f"{item.path}: ")))
        return None


def _select(files: list[tuple[DatasetItem, FaceCrops]], spec: CropSpec) -> np.ndarray:
    """One video's samples: evenly spread face-frames, or evenly spread windows of consecutive face-frames."""
    key = (spec.size, spec.margin)
    if spec.length == 1:
        pool = np.concatenate([fc.crops[key] for _, fc in files]) if files else np.empty((0,), np.uint8)
        return pool[evenly(len(pool), spec.per_video)]
    tracks = []
    stills = [fc.crops[key][:1] for item, fc in files if item.path.suffix.lower() in IMAGE_SUFFIXES]
    if any(len(s) for s in stills):
        tracks.append(np.concatenate(stills))  # a folder of frames: its images' first faces, in file order
    for item, fc in files:
        if item.path.suffix.lower() not in IMAGE_SUFFIXES:
            tracks += [fc.crops[key][fc.track == t] for t in dict.fromkeys(fc.track.tolist())]
    L = spec.length
    windows = [t[s:s + L] for t in tracks for s in range(0, len(t) - L + 1, L)]
    windows = [windows[i] for i in evenly(len(windows), spec.per_video)]
    return np.stack(windows) if windows else np.empty((0, L, spec.size, spec.size, 3), np.uint8)


def collect(dataset: Dataset, spec: CropSpec, *, seed: int, sbi: Sbi = None, device: str = "cpu",
            cache_dir: Path | None = None, transform: Callable[[np.ndarray], np.ndarray] | None = None,
            progress: bool = True) -> Samples:
    """Every video's samples, group by group, with pseudo-fakes for `sbi` and `transform` (features) applied per
    video, so memory holds features rather than every crop. Unreadable files are reported and skipped."""
    from stream.live.faces import DetectorConfig, FaceDetector

    detector = FaceDetector(DetectorConfig(device=device)) if spec.faces == "mtcnn" else None
    scanner = Scanner([_CropsOnly(spec)], [0.5], ScanOptions(fps=spec.fps, faces=spec.faces), detector)
    cache = CropCache(cache_dir, scanner) if cache_dir is not None else None
    landmarker = Landmarker(spec.size, spec.margin, device) if sbi else None
    parts: list[Samples] = []
    errors: list[tuple[Path, str]] = []
    made = 0
    bar = ExtractionProgress(len(dataset.items), progress)
    try:
        for group, members in groupby(sorted(dataset.items, key=lambda i: i.group), key=lambda i: i.group):
            files = []
            for item in members:
                bar.start(item)
                crops = _face_crops(item, scanner, cache, bar, errors)
                bar.done()
                if crops is not None:
                    files.append((item, crops))
            x = _select(files, spec)
            if not len(x):
                continue
            first = files[0][0]
            part = _samples(x, first.label, group, first.method)
            if landmarker is not None and first.label == REAL:
                lm = landmarker(x)
                if sbi == "online":
                    part = replace(part, landmarks=lm)
                else:
                    fakes = np.stack([blend(x[i], lm[i], (seed, SBI_STATIC, made + i)) for i in range(len(x))])
                    part = Samples.concat([part, _samples(fakes, FAKE, group, SBI_METHOD)])
                made += len(x)
            if transform is not None:
                part = replace(part, x=transform(part.x))
            parts.append(part)
    finally:
        bar.close()
    _report(errors, len(dataset.items))
    if not parts:
        raise TrainError(f"{dataset.root}: no usable face in any readable file "
                         f"(clips need {spec.length} face-frames of one face)" if spec.length > 1 else
                         f"{dataset.root}: no face found in any readable file")
    return Samples.concat(parts)


def _report(errors: list[tuple[Path, str]], total: int) -> None:
    for path, error in errors[:MAX_REPORTED_ERRORS]:
        say(f"skipped {path}: {error}")
    if len(errors) > MAX_REPORTED_ERRORS:
        say(f"... and {len(errors) - MAX_REPORTED_ERRORS} more unreadable files")
    if errors and len(errors) == total:
        raise TrainError(f"every one of the {total} files failed to read, e.g. {errors[0][0]}: {errors[0][1]}")
