"""The one scoring core shared by `serve`, `scan`, `eval` and `explain`.

Every job does the same steps once its faces are cut: push each face-frame's crops into its track's rings, take
the windows that became due (a single crop for frame engines, a clip for clip engines), stack them per engine
into one batch, predict, and hand each face back the p(fake) of every engine whose window it completed. Doing
it in one place means an engine feature (a quality gate, calibration, an ensemble) is added once. Fusion of the
engines' scores into one p(fake) is defined here too (`Fusion`), once for every job and the live verdicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from engines.base import Engine
from engines.calibration import Ensemble, calibration_of
from engines.quality import floor_of
from stream.live.faces.quality import QUALITY_CROP, FaceQuality
from stream.live.listeners import Listeners
from stream.live.rings import ReadyWindow, TrackRings, WindowRings, WindowSpec

CropKey = tuple[int, float]  # (crop size, margin)
# Clip engines get a new window every length / CLIP_OVERLAP face-frames: overlapping windows react sooner to a
# change than back-to-back ones, at CLIP_OVERLAP times the clip engine's cost per face.
CLIP_OVERLAP = 2


def window_for(engine: Engine) -> WindowSpec:
    """The window an engine consumes: its input spec's crop size, margin and clip length."""
    s = engine.spec
    return WindowSpec(size=s.size, margin=s.margin, length=s.frames, stride=max(1, s.frames // CLIP_OVERLAP))


def fuse(scores: Mapping[str, float], weights: Mapping[str, float] | None = None) -> float | None:
    """The weighted mean p(fake) of the engines that scored (unnamed engines weigh 1); None when none did."""
    if not scores:
        return None
    w = np.array([(weights or {}).get(n, 1.0) for n in scores])
    if w.sum() <= 0:
        raise ValueError(f"engine weights sum to zero for {sorted(scores)}")
    return float(np.dot(w, list(scores.values())) / w.sum())


@dataclass(frozen=True, slots=True)
class Fusion:
    """How the engines' p(fake) become one: a fitted ensemble's stacking when there is one, else the weighted
    mean (`fuse`) by `weights` (unnamed engines weigh 1). None when no engine scored. The only fusion there is:
    the scorer holds one, and the verdicts and jobs use that one."""

    weights: Mapping[str, float] = field(default_factory=dict)
    ensemble: Ensemble | None = None

    def __call__(self, scores: Mapping[str, float]) -> float | None:
        if self.ensemble is not None:
            return self.ensemble.fuse(scores)
        return fuse(scores, self.weights)


@dataclass(frozen=True, slots=True)
class EngineBatch:
    """One `predict` call: which engine, how long it took, how many windows it scored."""

    engine: str
    seconds: float
    size: int


@dataclass(frozen=True, slots=True)
class Gate:
    """Which engines may judge one face at its quality. With none, the face is `low-quality`, for `reason`."""

    trusted: frozenset[str]
    reason: str | None = None

    @property
    def low_quality(self) -> bool:
        return not self.trusted

    def keep(self, scores: Mapping[str, float]) -> dict[str, float]:
        """The scores of the engines that may judge this face."""
        return {n: s for n, s in scores.items() if n in self.trusted}


class Scorer:
    """Window specs, ring feeding, per-engine batching and the quality gate for a fixed set of engines."""

    quality_key = QUALITY_CROP  # the crop every job cuts to measure sharpness

    def __init__(self, engines: Sequence[Engine], ensemble: Ensemble | None = None, calibrated: bool = True,
                 weights: Mapping[str, float] | None = None) -> None:
        """`ensemble` fuses by its fitted stacking instead of the mean weighted by `weights`; `calibrated=False`
        reports raw engine scores even where an engine carries a calibration map (eval measures both)."""
        self.engines = list(engines)
        self.windows = {e.name: window_for(e) for e in self.engines}
        self.ensemble = ensemble
        self.fusion = Fusion(dict(weights or {}), ensemble)
        self.calibrated = calibrated
        self._batches: Listeners[EngineBatch] = Listeners("engine batch")
        if ensemble is not None and set(ensemble.member_names) != {e.name for e in self.engines}:
            raise ValueError(f"ensemble {ensemble.name} has members {ensemble.member_names}, the engines are "
                             f"{[e.name for e in self.engines]}")

    def fuse(self, scores: Mapping[str, float]) -> float | None:
        """One p(fake) from the engines' scores, by this scorer's `fusion`."""
        return self.fusion(scores)

    def on_batch(self, fn: Callable[[EngineBatch], None]) -> Callable[[], None]:
        """Call `fn(EngineBatch)` after every `predict` (metrics), on the scoring thread; returns the unsubscriber.
        `fn` must be quick: it runs inside the pass."""
        return self._batches.subscribe(fn)

    @property
    def crop_keys(self) -> list[CropKey]:
        """Every (size, margin) some engine's crops are cut at, in a stable order."""
        return sorted({w.crop_key for w in self.windows.values()})

    def gate(self, quality: FaceQuality) -> Gate:
        """Each engine's floor against this face's quality: an engine below its floor does not judge the face."""
        reasons = {e.name: floor_of(e).reason(e.name, quality.face_px, quality.sharpness) for e in self.engines}
        trusted = frozenset(n for n, r in reasons.items() if r is None)
        return Gate(trusted, None if trusted else "; ".join(r for r in reasons.values() if r))

    def track_rings(self) -> TrackRings:
        """Rings for every track of one input (scan, eval)."""
        return TrackRings(self.windows.values())

    def window_rings(self, track: int) -> WindowRings:
        """Rings for one track (the live scheduler keeps them in its per-track record)."""
        return WindowRings(track, self.windows.values())

    def score(self, faces: Iterable[tuple[WindowRings, Mapping[CropKey, np.ndarray]]]) -> list[dict[str, float]]:
        """Push each face-frame (its track's rings, its crop per key) and score every window that became due,
        with one `predict` per engine for the whole batch. Returns, per face in order, the p(fake) of each engine
        whose window that face completed (every engine for frame engines)."""
        ready: list[tuple[int, ReadyWindow]] = []
        n = 0
        for n, (rings, crops) in enumerate(faces, start=1):
            ready += [(n - 1, w) for w in rings.push(dict(crops))]
        out: list[dict[str, float]] = [{} for _ in range(n)]
        for engine in self.engines:
            mine = [(i, w) for i, w in ready if w.spec == self.windows[engine.name]]
            if not mine:
                continue
            batch = np.stack([w.clip[0] if w.spec.length == 1 else w.clip for _, w in mine])
            t0 = time.perf_counter()
            p = engine.predict(batch)
            if self._batches:
                self._batches.notify(EngineBatch(engine.name, time.perf_counter() - t0, len(batch)))
            cal = calibration_of(engine) if self.calibrated else None
            if cal is not None:
                p = cal.apply(p)
            for (i, _), s in zip(mine, p):
                out[i][engine.name] = float(s)
        return out
