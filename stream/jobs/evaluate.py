"""`eval`: measure engines on a labelled dataset with the same face pipeline as `scan`.

Each file goes through `Scanner.face_batches` (decode, MTCNN, IoU tracks, crops at every engine's size) and
`Scanner.score`, so `eval` measures exactly what `scan` and `serve` would report. Two levels are measured:
- **frame**: every scored face-frame, its p(fake) the mean over the engines that scored it;
- **video**: the mean of a video's frame scores (DeepfakeBench's convention, and `scan`'s score for frame
  engines). A folder of frame images counts as one video (see `stream.jobs.datasets`).

Only pixels reach a model: labels, methods and paths stay in the dataset items and the report.

The face crops of each file are cached on disk (`crop_cache.py`), so a second run over the same data only scores;
the measures and the report files are `eval_report.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from stream.jobs.crop_cache import CropCache, FaceCrops
from stream.jobs.datasets import Dataset, DatasetItem
from stream.jobs.scan import READ_ERRORS, Scanner
from stream.live.scoring import fuse



class EvalError(ValueError):
    """Nothing could be measured (every file failed, or no face anywhere); the message says why."""


class EvalProgress(Protocol):
    def start(self, item: DatasetItem) -> None: ...
    def frames(self, n: int) -> None: ...
    def done(self, result: ItemResult) -> None: ...


class _Silent:
    def start(self, item: DatasetItem) -> None: ...
    def frames(self, n: int) -> None: ...
    def done(self, result: ItemResult) -> None: ...


@dataclass
class ItemResult:
    item: DatasetItem
    frame_scores: np.ndarray  # fused p(fake) per scored face-frame
    error: str | None = None
    cached: bool = False
    gated: int = 0  # face-frames below every engine's quality floor: not scored, as in scan and serve
    engine_scores: list[dict[str, float]] = field(default_factory=list)  # per face-frame, each engine's p(fake)
    face_tracks: list[int] = field(default_factory=list)  # per face-frame of engine_scores, its track id


@dataclass
class VideoScore:
    path: Path
    label: int
    method: str
    frame_scores: np.ndarray

    @property
    def score(self) -> float:
        return float(np.mean(self.frame_scores))


@dataclass
class Report:
    dataset: Dataset
    models: list[str]
    threshold: float
    fps: float | None
    results: list[ItemResult]
    seconds: float
    cache: dict = field(default_factory=dict)

    @property
    def errors(self) -> list[ItemResult]:
        return [r for r in self.results if r.error is not None]

    @property
    def no_face(self) -> list[ItemResult]:
        return [r for r in self.results if r.error is None and not len(r.frame_scores) and not r.gated]

    @property
    def low_quality(self) -> list[ItemResult]:
        """Files whose faces were all below the models' quality floor: found, but not judged."""
        return [r for r in self.results if r.error is None and not len(r.frame_scores) and r.gated]

    def videos(self) -> list[VideoScore]:
        """Scored items merged by group, in dataset order: a video file, or a folder of its frames."""
        groups: dict[str, VideoScore] = {}
        for r in self.results:
            if r.error is not None or not len(r.frame_scores):
                continue
            i = r.item
            is_file = i.group == i.path.relative_to(self.dataset.root).as_posix()
            v = groups.setdefault(i.group, VideoScore(i.path if is_file else self.dataset.root / i.group,
                                                      i.label, i.method, np.empty(0)))
            v.frame_scores = np.concatenate([v.frame_scores, r.frame_scores])
        return list(groups.values())


def evaluate(dataset: Dataset, scanner: Scanner, cache: CropCache | None = None,
             progress: EvalProgress | None = None) -> Report:
    """Score every item; unreadable files are kept as errors and skipped. Raises EvalError if nothing scored."""
    progress = progress or _Silent()
    results = []
    started = time.perf_counter()
    for item in dataset.items:
        progress.start(item)
        result = _score_item(item, scanner, cache, progress)
        results.append(result)
        progress.done(result)
    seconds = time.perf_counter() - started
    failed = [r for r in results if r.error is not None]
    if len(failed) == len(results):
        first = failed[0]
        raise EvalError(f"{dataset.root}: every one of the {len(results)} files failed, "
                        f"e.g. {first.item.path}: {first.error}")
    if not any(len(r.frame_scores) for r in results):
        raise EvalError(f"{dataset.root}: no face was found in any readable file")
    return Report(dataset=dataset, models=[e.name for e in scanner.engines], threshold=scanner.threshold,
                  fps=scanner.fps, results=results, seconds=seconds,
                  cache={} if cache is None else {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses})


def _score_item(item: DatasetItem, scanner: Scanner, cache: CropCache | None, progress: EvalProgress) -> ItemResult:
    none = np.empty(0)
    try:
        entry = cache.entry(item.path) if cache is not None else None
        crops = cache.load(entry) if cache is not None and entry is not None else None
        cached = crops is not None
        if crops is None:
            crops = FaceCrops.extract(scanner, item.path, progress)
    except READ_ERRORS as exc:
        return ItemResult(item, none, error=_without_path(str(exc), item.path))
    if cache is not None and entry is not None and not cached:
        cache.save(entry, crops)
    batches = crops.batches(scanner.options.batch_frames)
    result, per_face = scanner.score(item.path, batches, progress.frames if cached else None)
    if result.error is not None:
        return ItemResult(item, none, error=result.error, cached=cached)
    frame_scores = np.array([fuse(s) for s in per_face if s], dtype=np.float64)  # the plain mean
    return ItemResult(item, frame_scores, cached=cached, gated=sum(t.gated for t in result.tracks),
                      engine_scores=[s for s in per_face if s],
                      face_tracks=[int(t) for t, s in zip(crops.track, per_face) if s])


def _without_path(message: str, path: Path) -> str:
    """The reason alone: readers' messages start with the path, which the report already gives."""
    return message.removeprefix(f"{path}: ")


class RichProgress:
    """The progress bar on stderr: files done, current file, frames decoded (or replayed from the cache).
    Skipped files are printed above the bar as they happen."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[frames]} frames"), TimeElapsedColumn(),
                                  console=Console(stderr=True), transient=True)
        self._task = self._progress.add_task("eval", total=total, frames=0)
        self._frames = 0

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, item: DatasetItem) -> None:
        self._progress.update(self._task, description=f"eval {item.path.name}")

    def frames(self, n: int) -> None:
        self._frames += n
        self._progress.update(self._task, frames=self._frames)

    def done(self, result: ItemResult) -> None:
        if result.error is not None:
            self._progress.console.print(f"dfstream eval: skipped {result.item.path}: {result.error}",
                                         markup=False, highlight=False, soft_wrap=True)
        self._progress.advance(self._task)
