"""`calibrate`: fit score calibration maps (and a stacked ensemble) on a labelled dataset, and measure calibration.

The faces come from the same path as `eval` (decode, MTCNN, tracks, crops, the scoring core with its quality
gate), scored raw, so the map is fitted on exactly what `serve` and `scan` will feed it. Each engine gets a
monotone map from raw score to p(fake) (Platt: a logistic regression on the logit; isotonic: scikit-learn's
IsotonicRegression); an ensemble's members are each calibrated, then stacked by a logistic regression on their
calibrated logits, fitted on the faces every member scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from engines.calibration import Calibration, Ensemble, Isotonic, Platt, logit
from stream.jobs.datasets import FAKE
from stream.jobs.eval_report import figure
from stream.jobs.evaluate import Report

Method = Literal["platt", "isotonic"]
ECE_BINS = 10  # equal-width confidence bins, the usual choice (Guo et al., ICML 2017)
MIN_PER_CLASS = 2  # faces of each class needed to fit anything
# Stacking regularisation (scikit-learn's C): mild, so a member that carries no information is pulled to ~0.
STACKING_C = 1.0


class CalibrationFitError(ValueError):
    """There is not enough labelled data to fit; the message says what is missing."""


@dataclass
class Faces:
    """Every scored face-frame of a report: its label (1 = fake) and each engine's raw p(fake) (NaN: not scored)."""

    labels: np.ndarray  # (N,)
    scores: dict[str, np.ndarray]  # engine -> (N,)

    @classmethod
    def of(cls, report: Report, engines: Sequence[str]) -> Faces:
        labels, rows = [], []
        for r in report.results:
            if r.error is not None:
                continue
            for face in r.engine_scores:
                if face:
                    labels.append(int(r.item.label == FAKE))
                    rows.append([face.get(n, np.nan) for n in engines])
        if not rows:
            raise CalibrationFitError(f"{report.dataset.root}: no scored face to fit on")
        table = np.array(rows, dtype=np.float64)
        return cls(np.array(labels), {n: table[:, i] for i, n in enumerate(engines)})


def _check_classes(y: np.ndarray, what: str) -> None:
    counts = [(y == c).sum() for c in (0, 1)]
    if min(counts) < MIN_PER_CLASS:
        raise CalibrationFitError(f"{what}: needs at least {MIN_PER_CLASS} real and {MIN_PER_CLASS} fake faces, "
                                  f"has {counts[0]} real and {counts[1]} fake")


def fit_map(raw: np.ndarray, y: np.ndarray, method: Method, model: str, weights_sha256: str,
            fitted_on: dict | None = None) -> Calibration:
    """A monotone map from `raw` p(fake) to calibrated p(fake) for one engine."""
    keep = ~np.isnan(raw)
    raw, y = raw[keep], y[keep]
    _check_classes(y, model)
    info = {**(fitted_on or {}), "faces": int(len(y)), "fake": int(y.sum()), "real": int(len(y) - y.sum())}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6).fit(logit(raw)[:, None], y)  # ~unregularised: Platt's fit
        return Calibration(model=model, weights_sha256=weights_sha256, method="platt",
                           platt=Platt(a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0])), fitted_on=info)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True).fit(raw, y)
    x, v = iso.X_thresholds_, iso.y_thresholds_
    if len(x) < 2:  # a constant map still needs two knots
        x, v = np.array([0.0, 1.0]), np.array([v[0], v[0]])
    return Calibration(model=model, weights_sha256=weights_sha256, method="isotonic",
                       isotonic=Isotonic(x=[float(a) for a in np.clip(x, 0, 1)], y=[float(b) for b in v]),
                       fitted_on=info)


def fit_stacking(calibrated: dict[str, np.ndarray], y: np.ndarray
                 ) -> tuple[dict[str, float], float, dict[str, float], int]:
    """Logistic-regression weights on the members' calibrated logits, over faces every member scored.

    The regression runs on standardised logits, so its (regularised) coefficients compare members fairly: a
    member's influence is how far one standard deviation of its logit moves the fused logit. Returns the
    coefficients in logit units (what `Ensemble.fuse` applies), the intercept, the influences and the face count."""
    from sklearn.linear_model import LogisticRegression

    names = list(calibrated)
    table = np.stack([calibrated[n] for n in names], axis=1)
    keep = ~np.isnan(table).any(axis=1)
    _check_classes(y[keep], "the ensemble (faces every member scored)")
    x = logit(table[keep])
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
    lr = LogisticRegression(C=STACKING_C).fit((x - mean) / std, y[keep])
    influence = lr.coef_[0]
    coef = influence / std
    intercept = float(lr.intercept_[0] - np.dot(coef, mean))
    return ({n: float(c) for n, c in zip(names, coef)}, intercept,
            {n: float(v) for n, v in zip(names, influence)}, int(keep.sum()))


def fit_ensemble(name: str, faces: Faces, shas: dict[str, str], method: Method, fitted_on: dict) -> Ensemble:
    members = [fit_map(faces.scores[n], faces.labels, method, n, shas[n], fitted_on) for n in faces.scores]
    calibrated = {m.model: np.where(np.isnan(faces.scores[m.model]), np.nan,
                                    m.apply(np.nan_to_num(faces.scores[m.model], nan=0.5)))
                  for m in members}
    coef, intercept, influence, n = fit_stacking(calibrated, faces.labels)
    return Ensemble(name=name, members=members, coef=coef, intercept=intercept, influence=influence,
                    fitted_on={**fitted_on, "faces": n})


def ece(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the bin-weighted gap between mean p(fake) and the fraction fake."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(p[inside].mean() - y[inside].mean())
    return float(total)


def reliability_diagram(curves: dict[str, np.ndarray], y: np.ndarray, out: Path, title: str,
                        bins: int = ECE_BINS) -> Path:
    """Fraction fake against mean p(fake) per bin, one line per curve (before / after), with the diagonal."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig, (ax,) = figure()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for label, p in curves.items():
        which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
        xs, ys = [], []
        for b in range(bins):
            inside = which == b
            if inside.any():
                xs.append(p[inside].mean())
                ys.append(y[inside].mean())
        ax.plot(xs, ys, marker="o", label=f"{label} (ECE {ece(p, y, bins):.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean p(fake) in bin", ylabel="fraction of faces that are fake",
           title=title)
    ax.legend(loc="upper left")
    fig.savefig(out)
    return out
