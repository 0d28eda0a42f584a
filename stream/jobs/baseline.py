"""`baseline`: learn a camera's bar from footage the operator vouches for as real, and judge inputs with it.

The rule and the file live in `stream.live.verdicts.baseline` (pure, for `serve` too); this module only turns
media into what the rule reads: per track, in time order, the engine scores the live judge would feed its
`TrackVerdict`. It goes the scan path (`Scanner.face_batches_of` then `Scanner.score`) and applies the quality gate
as the live judge does: a face below every engine's floor is counted, never scored; an engine below its floor
is left out of that face's fusion; a clip engine's latest score is carried between its windows.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.config.sources import SourceConfig
from stream.config.verdicts import VerdictPolicy
from stream.jobs.datasets import FAKE, REAL
from stream.jobs.scan import FaceBatch, ScanResult, Scanner
from stream.live.scoring import Fusion
from stream.live.sources import AVSource, Frame, SourceError
from stream.live.sources.live import open_source
from stream.live.sources.urls import redact
from stream.live.verdicts.baseline import Baseline, TrackJudgement, engine_keys, fit, run_track, sha256_json

LIVE_NAME = "baseline"  # the name the live input's SourceConfig carries (it is never shown)


@dataclass(frozen=True, slots=True)
class Footage:
    """What one input gives a baseline: per track, the engine scores of each judged face-frame in time order."""

    tracks: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    gated: int = 0  # face-frames below every engine's quality floor
    reason: str | None = None  # the latest reason a face was gated


def ensemble_key(scanner: Scanner) -> str | None:
    """What a baseline is keyed by besides the engines: the stacked ensemble that fuses them, if any."""
    return sha256_json(scanner.scorer.ensemble) if scanner.scorer.ensemble is not None else None


def fusion_of(scanner: Scanner, policy: VerdictPolicy) -> Callable[[Mapping[str, float]], float | None]:
    """The fusion the live judge would use: the ensemble's stacking, else the policy's weighted mean."""
    return Fusion(dict(policy.weights), scanner.scorer.ensemble)


def collect(scanner: Scanner, name: str | Path, batches: Iterable[FaceBatch],
            on_frames: Callable[[int], None] | None = None) -> tuple[ScanResult, Footage]:
    """Score face batches with the scan path and sort each face's judged scores into its track."""
    order: list[tuple[int, object]] = []  # (track, gate) per face, in the order `score` returns them

    def tap(batches: Iterable[FaceBatch]) -> Iterator[FaceBatch]:
        for batch in batches:
            for face in batch.faces:
                order.extend((tid, scanner.scorer.gate(face.quality[j]) if face.quality else None)
                             for j, tid in enumerate(face.tracks))
            yield batch

    result, per_face = scanner.score(name, tap(batches), on_frames)
    latest: dict[int, dict[str, float]] = {}
    tracks: dict[int, list[dict[str, float]]] = {}
    gated, reason = 0, None
    for (tid, gate), got in zip(order, per_face):
        if gate is not None and gate.low_quality:
            gated, reason = gated + 1, gate.reason
            continue
        carried = latest.setdefault(tid, {})
        carried.update(got)
        engines = gate.keep(carried) if gate is not None else dict(carried)
        if engines:
            tracks.setdefault(tid, []).append(engines)
    return result, Footage(tracks, gated, reason)


def frames_of(source: str | Path, fps: float | None, seconds: float | None) -> Iterator[Frame]:
    """A file's or a live source's sampled frames, the first `seconds` of them (stream time) when given."""
    config = SourceConfig(name=LIVE_NAME, url=str(source))
    reader = AVSource(source, sample_fps=fps) if config.kind == "file" else open_source(config, sample_fps=fps)
    frames = reader.frames()
    if seconds is None:
        return frames
    first: list[float] = []

    def within(frame: Frame) -> bool:
        first[:] = first or [frame.time]
        return frame.time - first[0] < seconds

    return itertools.takewhile(within, frames)


def learn(scanner: Scanner, sources: Sequence[str | Path], policy: VerdictPolicy, *, model: str,
          seconds: float | None = None, on_frames: Callable[[int], None] | None = None) -> Baseline:
    """Learn a baseline from every input (each input's tracks apart). Raises BaselineError (nothing written)
    when the footage cannot vouch for the camera, and a SourceError for an unreadable input."""
    tracks: list[list[dict[str, float]]] = []
    gated, reason = 0, None
    for source in sources:
        result, footage = collect(scanner, source, scanner.face_batches_of(frames_of(source, scanner.fps, seconds)),
                                  on_frames)
        if result.error is not None:
            raise SourceError(result.error)
        tracks += list(footage.tracks.values())
        gated += footage.gated
        reason = footage.reason or reason
    return fit(tracks, policy, model=model, engines=engine_keys(scanner.engines), source=_names(sources),
               fps=scanner.fps, gated=gated, gated_reason=reason, fusion=fusion_of(scanner, policy),
               ensemble_sha256=ensemble_key(scanner))


def _names(sources: Sequence[str | Path]) -> str:
    return ", ".join(redact(str(s)) for s in sources)


@dataclass(frozen=True, slots=True)
class Judged:
    """An input judged with a baseline: fake when any track's verdict turned fake under the camera's bar."""

    label: str  # fake, real, low-quality or no-face
    tracks: dict[int, TrackJudgement]
    threshold: float

    def to_json(self) -> dict:
        return {"label": self.label, "threshold": self.threshold,
                "tracks": [{"id": t, **dataclasses.asdict(j)} for t, j in self.tracks.items()]}


def judge(baseline: Baseline, footage: Footage, fusion: Callable[[Mapping[str, float]], float | None] | None = None,
          policy: VerdictPolicy | None = None) -> Judged:
    """Each track through a fresh rolling verdict with the camera's bar (or `policy`: the global one, to compare)."""
    policy = policy or baseline.verdict_policy()
    tracks = {t: run_track(seq, policy, fusion) for t, seq in footage.tracks.items()}
    if any(j.verdict == "fake" for j in tracks.values()):
        label = "fake"
    elif tracks:
        label = "real"
    else:
        label = "low-quality" if footage.gated else "no-face"
    return Judged(label, tracks, policy.t_high)


def scan(scanner: Scanner, path: str | Path, baseline: Baseline,
         on_frames: Callable[[int], None] | None = None) -> ScanResult:
    """`scan` of one input judged with a baseline: the label is the rolling verdict under the camera's bar (an
    alert would have been raised), the score stays the video's mean p(fake)."""
    result, footage = collect(scanner, path, scanner.face_batches(path), on_frames)  # read errors: in `result`
    if result.error is not None:
        return result
    judged = judge(baseline, footage, fusion_of(scanner, baseline.policy))
    return dataclasses.replace(result, label=judged.label, threshold=baseline.threshold, baseline=judged.to_json())


def judge_report(report: Any, baseline: Baseline, fusion: Callable[[Mapping[str, float]], float | None] | None = None
                 ) -> dict:
    """`eval --baseline`: every scored file's tracks through the rolling verdict twice, under the global bar and
    under the camera's, and how many real files each calls fake (false alarms) and fake files it catches."""
    rows = []
    for r in report.results:
        if r.error is not None:
            continue
        tracks: dict[int, list[dict[str, float]]] = {}
        for tid, scores in zip(r.face_tracks, r.engine_scores):
            tracks.setdefault(tid, []).append(scores)
        footage = Footage(tracks, r.gated)
        camera = judge(baseline, footage, fusion)
        rows.append({"path": str(r.item.path), "label": r.item.label, "method": r.item.method,
                     "global": judge(baseline, footage, fusion, policy=baseline.policy).label,
                     "camera": camera.label})

    def rates(key: str, method: str | None = None) -> dict:
        real = [x for x in rows if x["label"] == REAL]
        fake = [x for x in rows if x["label"] == FAKE and method in (None, x["method"])]
        return {"false_alarms": sum(x[key] == "fake" for x in real), "real": len(real),
                "catches": sum(x[key] == "fake" for x in fake), "fake": len(fake)}

    methods = sorted({x["method"] for x in rows if x["label"] == FAKE})
    return {"threshold": baseline.threshold, "global_threshold": baseline.policy.t_high, "alpha": baseline.alpha,
            "n_eff": baseline.n_eff, "rule": baseline.rule, "learned_from": baseline.source,
            "global": rates("global"), "camera": rates("camera"),
            "methods": {m: {"global": rates("global", m), "camera": rates("camera", m)} for m in methods},
            "files": rows}
