"""`eval`: measure engines on a labelled dataset with the same face pipeline as `scan`.

Each file goes through `Scanner.face_batches` (decode, MTCNN, IoU tracks, crops at every engine's size) and
`Scanner.score`, so `eval` measures exactly what `scan` and `serve` would report. Two levels are measured:
- **frame**: every scored face-frame, its p(fake) the mean over the engines that scored it;
- **video**: the mean of a video's frame scores (DeepfakeBench's convention, and `scan`'s score for frame
  engines). A folder of frame images counts as one video (see `stream.jobs.datasets`).

Only pixels reach a model: labels, methods and paths stay in the dataset items and the report.

Decoding and detection cost far more than MesoNet itself, so the face crops of each file are cached as .npz,
keyed by the file's sha256 (its content, never its name) and the crop spec (crop sizes and margins, fps,
detector and tracker settings). A second run over the same data only scores. Scoring always runs from those
crop arrays, fresh or cached, so both runs give identical scores.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from engines.weights import sha256_of
from stream.jobs.datasets import FAKE, REAL, Dataset, DatasetItem
from stream.live.faces.tracker import TrackerConfig
from stream.live.faces.quality import FaceQuality
from stream.jobs.scan import READ_ERRORS, CropKey, FaceBatch, FaceFrame, Scanner

CACHE_VERSION = 2  # bump when the cached arrays' meaning changes (2: each face's size and sharpness)
CACHE_ENV = "DFSTREAM_CACHE"
CROPS_SUBDIR = "crops"
SPEC_HASH_CHARS = 16
METRICS_JSON, VIDEOS_CSV, ROC_PNG, HISTOGRAM_PNG = "metrics.json", "videos.csv", "roc.png", "scores.png"
HISTOGRAM_BINS = 20
FIGURE_SIZE = (6.0, 5.0)
FIGURE_DPI = 110
AXIS_PAD = 0.02  # so curves along the plot's edges (a perfect or a useless detector) stay visible
COLOURS = {REAL: "tab:green", FAKE: "tab:red"}

log = logging.getLogger(__name__)


class EvalError(ValueError):
    """Nothing could be measured (every file failed, or no face anywhere); the message says why."""


def default_crop_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / CROPS_SUBDIR
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dfstream" / CROPS_SUBDIR


@dataclass
class FaceCrops:
    """Every face `face_batches` found in one file, in order: its sampled-frame ordinal, track id and crops."""

    frames: int  # sampled frames decoded, faces or not
    index: np.ndarray  # (N,) sampled-frame ordinal of each face
    track: np.ndarray  # (N,) track id of each face
    crops: dict[CropKey, np.ndarray]  # (N, size, size, 3) uint8 per (size, margin)
    face_px: np.ndarray | None = None  # (N,) each face's short side in source pixels
    sharpness: np.ndarray | None = None  # (N,) each face's sharpness (stream.live.faces.quality)

    @classmethod
    def extract(cls, scanner: Scanner, path: Path, progress: EvalProgress) -> FaceCrops:
        """Decode, detect and crop one file; raises one of `READ_ERRORS` if it is unreadable."""
        frames, faces = 0, []
        for batch in scanner.face_batches(path):
            frames += batch.frames
            faces += batch.faces
            progress.frames(batch.frames)
        keys = scanner.crop_keys
        rows = [(f.index, t) for f in faces for t in f.tracks]
        quality = [q for f in faces for q in f.quality]
        return cls(
            frames=frames,
            index=np.array([r[0] for r in rows], dtype=np.int64),
            track=np.array([r[1] for r in rows], dtype=np.int64),
            face_px=np.array([q.face_px for q in quality], dtype=np.float64),
            sharpness=np.array([q.sharpness for q in quality], dtype=np.float64),
            crops={k: np.concatenate([f.crops[k] for f in faces]) if faces else np.empty((0, k[0], k[0], 3), np.uint8)
                   for k in keys},
        )

    def batches(self, batch_frames: int) -> Iterator[FaceBatch]:
        """Replay as the `FaceBatch`es `face_batches` made (same frames per batch), so engines see the same batches."""
        for first in range(0, self.frames, batch_frames):
            in_batch = np.flatnonzero((self.index >= first) & (self.index < first + batch_frames))
            faces = []
            for ordinal in dict.fromkeys(self.index[in_batch].tolist()):
                rows = in_batch[self.index[in_batch] == ordinal]
                quality = ([FaceQuality(float(p), float(s)) for p, s in zip(self.face_px[rows], self.sharpness[rows])]
                           if self.face_px is not None and self.sharpness is not None else [])
                faces.append(FaceFrame(ordinal, self.track[rows].tolist(), {k: c[rows] for k, c in self.crops.items()},
                                       quality))
            yield FaceBatch(frames=min(batch_frames, self.frames - first), faces=faces)


class CropCache:
    """Face crops on disk, one .npz per (file content, crop spec). Compressed (about 1.5x smaller, and loading
    stays far cheaper than decoding). Writes are atomic, so a killed run leaves no half-written entry; an
    unreadable entry is treated as a miss."""

    def __init__(self, root: Path, scanner: Scanner) -> None:
        self.root = Path(root)
        detector = scanner.detector.config.model_dump() if scanner.detector is not None else None
        spec = {"version": CACHE_VERSION, "crop_keys": scanner.crop_keys, "fps": scanner.fps,
                "faces": scanner.options.faces, "batch_frames": scanner.options.batch_frames,
                "detector": detector, "tracker": TrackerConfig().model_dump()}
        self.spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:SPEC_HASH_CHARS]
        self.hits = self.misses = 0

    def entry(self, path: Path) -> Path:
        """Where `path`'s crops live: named by its content's sha256, so a renamed or linked copy hits too."""
        digest = sha256_of(path)
        return self.root / digest[:2] / f"{digest}-{self.spec_hash}.npz"

    def load(self, entry: Path) -> FaceCrops | None:
        try:
            with np.load(entry, allow_pickle=False) as z:
                keys = [(int(s), float(m)) for s, m in z["keys"]]
                crops = FaceCrops(frames=int(z["frames"]), index=z["index"], track=z["track"],
                                  crops={k: z[f"crops{i}"] for i, k in enumerate(keys)},
                                  face_px=z["face_px"] if "face_px" in z.files else None,
                                  sharpness=z["sharpness"] if "sharpness" in z.files else None)
        except (OSError, KeyError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return crops

    def save(self, entry: Path, crops: FaceCrops) -> None:
        """Store `crops`; a cache that cannot be written (full disk, read-only folder) only costs speed."""
        tmp = entry.with_suffix(f".{os.getpid()}.tmp.npz")
        keys = list(crops.crops)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            quality = {} if crops.face_px is None else {"face_px": crops.face_px, "sharpness": crops.sharpness}
            np.savez_compressed(tmp, frames=crops.frames, index=crops.index, track=crops.track, **quality,
                                keys=np.array(keys, dtype=np.float64),
                                **{f"crops{i}": crops.crops[k] for i, k in enumerate(keys)})
            os.replace(tmp, entry)
        except OSError as exc:
            log.warning("crop cache not written (%s): %s", entry, exc)
            tmp.unlink(missing_ok=True)


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
    frame_scores = np.array([np.mean(list(s.values())) for s in per_face if s], dtype=np.float64)
    return ItemResult(item, frame_scores, cached=cached, gated=sum(t.gated for t in result.tracks),
                      engine_scores=[s for s in per_face if s],
                      face_tracks=[int(t) for t, s in zip(crops.track, per_face) if s])


def _without_path(message: str, path: Path) -> str:
    """The reason alone: readers' messages start with the path, which the report already gives."""
    return message.removeprefix(f"{path}: ")


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Accuracy, F1 and ROC AUC (scikit-learn) of p(fake) `scores` against labels (1 = fake); a score at or above
    `threshold` is called fake, as in `scan`. AUC is None when only one class is present."""
    from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=np.float64)
    predicted = (s >= threshold).astype(int)
    return {
        "n": int(len(y)), "real": int(np.sum(y == REAL)), "fake": int(np.sum(y == FAKE)),
        "accuracy": float(accuracy_score(y, predicted)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "auc": float(roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else None,
    }


def _levels(report: Report) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(labels, scores, methods) at frame and video level."""
    videos = report.videos()
    frame_labels = np.concatenate([np.full(len(v.frame_scores), v.label) for v in videos])
    frame_methods = np.concatenate([np.full(len(v.frame_scores), v.method, dtype=object) for v in videos])
    return {
        "frame": (frame_labels, np.concatenate([v.frame_scores for v in videos]), frame_methods),
        "video": (np.array([v.label for v in videos]), np.array([v.score for v in videos]),
                  np.array([v.method for v in videos], dtype=object)),
    }


def metrics(report: Report) -> dict:
    levels = _levels(report)
    out: dict = {
        "dataset": str(report.dataset.root), "layout": report.dataset.layout, "models": report.models,
        "threshold": report.threshold, "fps": report.fps,
        "counts": {**report.dataset.counts(), "scored": sum(len(r.frame_scores) > 0 for r in report.results),
                   "no_face": len(report.no_face), "errors": len(report.errors),
                   "low_quality": len(report.low_quality),
                   "low_quality_face_frames": sum(r.gated for r in report.results)},
    }
    for level, (y, s, _) in levels.items():
        out[level] = binary_metrics(y, s, report.threshold)
    # Per method: that method's fakes against all reals, so every method is judged on the same negatives.
    out["methods"] = {}
    for method in report.dataset.methods:
        out["methods"][method] = {
            level: binary_metrics(y[keep], s[keep], report.threshold)
            for level, (y, s, m) in levels.items() if (keep := (m == method) | (y == REAL)).any()}
    out["warnings"] = [f"{level}-level AUC is undefined: only one class was scored"
                       for level in levels if out[level]["auc"] is None]
    out["errors"] = [{"path": str(r.item.path), "error": r.error} for r in report.errors]
    out["no_face"] = [str(r.item.path) for r in report.no_face]
    out["low_quality"] = [str(r.item.path) for r in report.low_quality]
    out["cache"] = report.cache
    out["seconds"] = round(report.seconds, 3)
    return out


def rescored(report: Report, fuse: Callable[[dict[str, float]], float | None],
             transform: Callable[[dict[str, float]], dict[str, float]] = dict, models: list[str] | None = None
             ) -> Report:
    """The same faces with new fused scores: each face-frame's engine scores through `transform` (calibration
    maps) and then `fuse` (mean, an ensemble's stacking, or one member alone). Faces `fuse` cannot score drop."""
    results = []
    for r in report.results:
        faces = [transform(s) for s in r.engine_scores]
        fused = [fuse(s) for s in faces]
        results.append(dataclasses.replace(r, engine_scores=faces,
                                           frame_scores=np.array([f for f in fused if f is not None], np.float64)))
    return dataclasses.replace(report, results=results, models=models or report.models)


def frame_labels_and_scores(report: Report) -> tuple[np.ndarray, np.ndarray]:
    """(labels, fused p(fake)) of every scored face-frame."""
    y, s = _levels(report)["frame"][:2]
    return y, s


def write_report(report: Report, out_dir: Path, extra: dict | None = None) -> dict:
    """Write metrics.json (with `extra`'s keys, e.g. "emissions"), videos.csv, the ROC curve and the score
    histogram; return the metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {**metrics(report), **(extra or {})}
    (out_dir / METRICS_JSON).write_text(json.dumps(result, indent=2) + "\n")
    with open(out_dir / VIDEOS_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "method", "score", "frames", "predicted"])
        for v in report.videos():
            writer.writerow([str(v.path), v.label, v.method, repr(v.score), len(v.frame_scores),
                             "fake" if v.score >= report.threshold else "real"])
    levels = _levels(report)
    title = f"{'+'.join(report.models)} on {report.dataset.root.name}"
    _plot_roc(levels, result, title, out_dir / ROC_PNG)
    _plot_histogram(levels, report.threshold, title, out_dir / HISTOGRAM_PNG)
    return result


def _figure(ncols: int = 1):
    # A bare Figure on the Agg canvas: no pyplot, so no global backend and no display is ever touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(FIGURE_SIZE[0] * ncols, FIGURE_SIZE[1]), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _plot_roc(levels: dict, result: dict, title: str, path: Path) -> None:
    from sklearn.metrics import roc_curve

    fig, (ax,) = _figure()
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="chance")
    for level, style in (("video", "-"), ("frame", "--")):
        y, s, m = levels[level]
        if result[level]["auc"] is not None:
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, ls=style, lw=2, label=f"{level}s (AUC {result[level]['auc']:.3f}, n={len(y)})")
    if len(result["methods"]) > 1:
        y, s, m = levels["video"]
        for method, by_level in result["methods"].items():
            keep = (m == method) | (y == REAL)
            if "video" in by_level and by_level["video"]["auc"] is not None:
                fpr, tpr, _ = roc_curve(y[keep], s[keep])
                auc = by_level["video"]["auc"]
                ax.plot(fpr, tpr, lw=1, alpha=0.7, label=f"{method} videos vs reals (AUC {auc:.3f})")
    ax.set(xlabel="false positive rate (reals called fake)", ylabel="true positive rate (fakes caught)",
           xlim=(-AXIS_PAD, 1 + AXIS_PAD), ylim=(-AXIS_PAD, 1 + AXIS_PAD), title=f"ROC: {title}")
    ax.legend(loc="lower right", fontsize="small")
    fig.savefig(path)


def _plot_histogram(levels: dict, threshold: float, title: str, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(ncols=2)
    bins = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    for ax, level in zip(axes, ("frame", "video")):
        y, s, _ = levels[level]
        for label, name in ((REAL, "real"), (FAKE, "fake")):
            ax.hist(s[y == label], bins=bins, alpha=0.6, color=COLOURS[label], label=f"{name} (n={np.sum(y == label)})")
        ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:g}")
        ax.set(xlabel="p(fake)", ylabel=f"{level}s", title=f"{level}-level scores")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.savefig(path)


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
