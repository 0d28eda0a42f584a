"""`eval`'s measures and files: accuracy, F1, recall and ROC AUC at frame and video level and per manipulation
method, rescoring the same faces with another fusion or calibration, and the report folder (metrics.json,
videos.csv, the ROC curve and the score histograms)."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stream.jobs.datasets import FAKE, REAL
from stream.jobs.evaluate import Report

METRICS_JSON, VIDEOS_CSV, ROC_PNG, HISTOGRAM_PNG = "metrics.json", "videos.csv", "roc.png", "scores.png"
HISTOGRAM_BINS = 20
FIGURE_SIZE = (6.0, 5.0)
FIGURE_DPI = 110
AXIS_PAD = 0.02  # so curves along the plot's edges (a perfect or a useless detector) stay visible
COLOURS = {REAL: "tab:green", FAKE: "tab:red"}


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


def figure(ncols: int = 1):
    # A bare Figure on the Agg canvas: no pyplot, so no global backend and no display is ever touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(FIGURE_SIZE[0] * ncols, FIGURE_SIZE[1]), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _plot_roc(levels: dict, result: dict, title: str, path: Path) -> None:
    from sklearn.metrics import roc_curve

    fig, (ax,) = figure()
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

    fig, axes = figure(ncols=2)
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
