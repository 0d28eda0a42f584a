"""Voice baselines from files: learn a stream's voice bar from speech the operator vouches for as real
(`dfstream baseline --modality voice`), and judge a file's voice with it (`scan --modality voice --baseline`).

The rule and the file are the faces' (`stream.live.verdicts.baseline`, `modality: voice`); this module only turns a
file's sound into what the rule reads, as the live voice thread would feed its `TrackVerdict`: the windows of each
file in time order, every `hop_s` (the live default, so a file's baseline fits `serve`'s voice path), each window's
(calibrated) p(fake) per voice engine, and the windows without enough speech left out and counted. Each file is
its own track: the smoothing never spans two files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.calibration import calibration_of
from stream.config.verdicts import VerdictPolicy
from stream.config.voices import VoiceConfig
from stream.jobs.voice_scan import VoiceResult, VoiceScanner
from stream.live.scoring import Fusion
from stream.live.sources import SourceError
from stream.live.sources.urls import redact
from stream.live.verdicts.baseline import Baseline, engine_keys, fit, run_track

HOP_S = VoiceConfig().hop_s  # the live voice path's default hop: a baseline's fps is 1 / hop


@dataclass(frozen=True, slots=True)
class VoiceFootage:
    """What one file's sound gives a voice baseline: each judged window's engine p(fake), in time order."""

    windows: list[dict[str, float]]
    gated: int = 0  # windows without enough speech for any engine
    reason: str | None = None  # the latest reason a window was not judged


def footage(scanner: VoiceScanner, result: VoiceResult, seconds: float | None = None) -> VoiceFootage:
    """A scanned file's windows as the live path would judge them: the i-th window of every engine together,
    calibrated as the live path calibrates; only windows ending within the first `seconds`, when given."""
    engines = {e.name: e for e in scanner.scorer.engines}
    rows: dict[int, dict[str, float]] = {}
    reasons: dict[int, str | None] = {}
    seen: dict[str, int] = {}
    for w in result.windows:
        i = seen[w.engine] = seen.get(w.engine, -1) + 1
        if seconds is not None and w.end_s > seconds + 1e-9:
            continue
        row = rows.setdefault(i, {})
        if w.p_fake is None:
            reasons[i] = w.reason
            continue
        cal = calibration_of(engines[w.engine])
        row[w.engine] = float(cal.apply(np.array([w.p_fake]))[0]) if cal is not None else float(w.p_fake)
    order = sorted(rows)
    gated = [i for i in order if not rows[i]]
    return VoiceFootage([rows[i] for i in order if rows[i]], len(gated),
                        next((reasons[i] for i in reversed(gated) if reasons.get(i)), None))


def learn_voice(scanner: VoiceScanner, sources: Sequence[str | Path], policy: VerdictPolicy, *, model: str,
                seconds: float | None = None) -> Baseline:
    """Learn a voice baseline from every file's speech (each file its own track). Raises BaselineError (nothing
    written) when the speech cannot vouch for the voice, and a SourceError for an unreadable file."""
    if scanner.hop_s is None:
        raise ValueError("a voice baseline needs windows on a fixed hop: VoiceScanner(..., hop_s=HOP_S)")
    tracks: list[list[dict[str, float]]] = []
    gated, reason = 0, None
    for source in sources:
        result = scanner.scan(source)
        if result.label == "error":
            raise SourceError(result.error or f"{source}: cannot be read")
        heard = footage(scanner, result, seconds)
        tracks.append(heard.windows)
        gated, reason = gated + heard.gated, heard.reason or reason
    return fit(tracks, policy, model=model, engines=engine_keys(scanner.scorer.engines),
               source=", ".join(redact(str(s)) for s in sources), fps=1.0 / scanner.hop_s, gated=gated,
               gated_reason=reason, fusion=Fusion(dict(policy.weights)), modality="voice")


def judge_voice(scanner: VoiceScanner, path: str | Path, baseline: Baseline) -> VoiceResult:
    """`scan --modality voice --baseline`: the file's windows through the voice's rolling verdict at the camera's
    voice bar; the label is that verdict (fake: an alert would have been raised), the score stays the mean."""
    result = scanner.scan(path)
    if result.label in ("error", "no-audio"):
        return result
    heard = footage(scanner, result)
    fusion = Fusion(dict(baseline.policy.weights))
    judged = run_track(heard.windows, baseline.verdict_policy(), fusion)
    at_global = run_track(heard.windows, baseline.policy, fusion)  # what the global voice bar would have said
    label = "fake" if judged.verdict == "fake" else "real" if judged.updates else "low-quality"
    return dataclasses.replace(result, label=label, threshold=baseline.threshold,
                               baseline={**dataclasses.asdict(judged), "threshold": baseline.threshold,
                                         "global_threshold": baseline.policy.t_high,
                                         "global_verdict": at_global.verdict})
