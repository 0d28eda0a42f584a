"""`eval --modality voice`: measure voice engines on a folder of real/ and fake/[GENERATOR/] speech.

Each file goes through `VoiceScanner.scan`, so `eval` measures what `scan --modality voice` reports. Two levels:
- **file**: a file's score (the mean over its judged windows, fused across engines);
- **window**: every judged window's p(fake) with its file's label (fused across engines per window span).
For each: ROC AUC and the equal error rate (EER, where the false-acceptance and false-rejection rates meet on
sklearn's roc_curve, linearly interpolated), accuracy at the threshold; per generator (each fake/ folder against
all reals) the same. Files without speech, without audio or unreadable are counted and listed, never scored.
Writes metrics.json and voices.csv (one row per file).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.jobs.datasets import FAKE, REAL, Dataset, DatasetItem
from stream.jobs.voice_scan import VoiceResult, VoiceScanner

METRICS_JSON, VOICES_CSV = "metrics.json", "voices.csv"


class VoiceEvalError(ValueError):
    """Nothing could be measured (no file had judged speech of both labels); the message says why."""


@dataclass(frozen=True)
class VoiceItem:
    item: DatasetItem
    result: VoiceResult


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(EER, the threshold there): where the false-positive rate equals the false-negative rate (1 - TPR) on the
    ROC, interpolated between the two ROC points that straddle the crossing."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # rises from -1 to +1 along the curve
    i = int(np.flatnonzero(diff >= 0)[0])
    if i == 0 or diff[i] == 0:
        return float(fpr[i]), float(min(thresholds[i], 1.0))
    w = -diff[i - 1] / (diff[i] - diff[i - 1])  # linear crossing between point i-1 and i
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    threshold = min(thresholds[i - 1], 1.0) + w * (thresholds[i] - min(thresholds[i - 1], 1.0))
    return float(eer), float(threshold)


def binary(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """n, AUC, EER (and its threshold), accuracy at `threshold`; AUC/EER None unless both labels are present."""
    from sklearn.metrics import roc_auc_score

    y, s = np.asarray(labels, int), np.asarray(scores, float)
    out = {"n": int(len(y)), "real": int((y == REAL).sum()), "fake": int((y == FAKE).sum()),
           "accuracy": float(((s >= threshold).astype(int) == y).mean()) if len(y) else None,
           "auc": None, "eer": None, "eer_threshold": None}
    if len(set(y.tolist())) == 2:
        out["auc"] = float(roc_auc_score(y, s))
        out["eer"], out["eer_threshold"] = equal_error_rate(y, s)
    return out


def window_scores(result: VoiceResult) -> list[float]:
    """Per window span, the mean over the engines that judged it."""
    spans: dict[tuple[float, float], list[float]] = {}
    for w in result.judged:
        spans.setdefault((w.start_s, w.end_s), []).append(w.p_fake)
    return [float(np.mean(v)) for v in spans.values()]


def evaluate_voices(dataset: Dataset, scanner: VoiceScanner,
                    progress: Callable[[DatasetItem, VoiceResult], None] | None = None) -> list[VoiceItem]:
    out = []
    for item in dataset.items:
        result = scanner.scan(item.path)
        out.append(VoiceItem(item, result))
        if progress:
            progress(item, result)
    return out


def voice_metrics(items: list[VoiceItem], threshold: float, models: list[str]) -> dict:
    scored = [v for v in items if v.result.score is not None]
    y = np.array([v.item.label for v in scored], int)
    s = np.array([v.result.score for v in scored], float)
    wy = np.array([v.item.label for v in scored for _ in window_scores(v.result)], int)
    ws = np.array([x for v in scored for x in window_scores(v.result)], float)
    if len(set(y.tolist())) < 2:
        raise VoiceEvalError(f"only {len(scored)} of {len(items)} files had judged speech, not of both labels: "
                             "nothing to measure (see the unscored files: no speech, no audio, errors)")
    methods = sorted({v.item.method for v in scored if v.item.label == FAKE})
    by_method = {}
    for m in methods:
        keep = np.array([v.item.label == REAL or v.item.method == m for v in scored])
        by_method[m] = binary(y[keep], s[keep], threshold)
    unscored = {label: [str(v.item.path) for v in items if v.result.label == label]
                for label in ("low-quality", "no-audio", "error")}
    return {"modality": "voice", "models": models, "threshold": threshold, "file": binary(y, s, threshold),
            "window": binary(wy, ws, threshold), "generators": by_method,
            "unscored": {k: v for k, v in unscored.items() if v}}


def write_voice_report(items: list[VoiceItem], metrics: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_JSON).write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out / VOICES_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "generator", "verdict", "score", "windows_scored", "reason"])
        for v in items:
            r = v.result
            writer.writerow([str(v.item.path), "fake" if v.item.label == FAKE else "real", v.item.method, r.label,
                             "" if r.score is None else f"{r.score:.6f}", len(window_scores(r)),
                             r.error or r.reason or ""])
    return metrics
