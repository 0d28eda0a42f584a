"""Per-camera baselines ("learn normal"): a camera's own known-real footage turns the global bar into a camera bar
with a stated false-alarm rate.

Why: scores carry a per-camera offset (lighting, compression, resolution, the person) that a global threshold
cannot know. What is learned is what the verdict uses: the smoothed, fused track score of `TrackVerdict`
(policy.py), so the promise is about verdicts, not single frames. Faces below the quality gate never reach `fit`:
the caller leaves them out, as the judge does.

**What is sampled.** The verdict turns fake when k consecutive smoothed updates reach t_high, so the statistic that
matters is a run's *held level*: the lowest of k consecutive smoothed scores. Consecutive updates share most of
their inputs (a median over `window` updates) and are not exchangeable, so each track's series is cut into
non-overlapping blocks of `block` updates (default the median window: no two blocks share an input); a block's
highest held level is one effective sample. Fewer than `min_effective` blocks is refused, with the seconds still
needed.

**The bar (the rule).** In logits of p(fake), with m block levels X and M the highest held level seen:
1. conformal: with k = ceil((m + 1)(1 - alpha)) <= m, the bar is just above the k-th smallest X. For exchangeable
   blocks, a new block of real footage turns the verdict fake with probability at most alpha (split conformal
   prediction). Only this rule may lower the bar below t_high, and never below `floor`.
2. bounded (k > m: the conformal bound is +inf, e.g. under 99 blocks at alpha 0.01): the Student-t prediction
   bound of one more block level, mean(X) + t(1 - alpha, m - 1) sd(X) sqrt(1 + 1/m), never below M nor below
   t_high. It assumes normal block levels in logits: a weaker promise, named `bounded` in the record.
3. the ceiling: the bar is never above both t_high and M + `ceiling_margin`, so a face held far above everything
   the camera showed as real always alerts, however short or noisy the footage was.
So a noisy camera's bar only rises (it alerts less, never more); a quiet camera's bar drops only on a distribution-
free guarantee and at most to `floor` (default p(fake) 0.5, where a calibrated model calls a face as likely fake
as real), so a stretch learned while the camera happened to be quiet cannot make it alert on faces the model calls
probably real. t_low moves by the same logit shift as t_high, so the hysteresis keeps its width.

**Two-sided (opt-in, `direction: both`).** A lower bar as well, mirrored in logits (`_lower_bar`, bounds.py): blocks'
lowest levels held for k updates, the lower conformal bound (else the Student-t lower bound, never above the lowest
level seen L), never below L - `floor_margin`; alpha is split between the two bars. A face held below it for k
updates is fake with the reason "unlike this camera": a departure from this camera's normal, not the detector
seeing a fake. Files without the lower bar (older ones) load as `direction: above`.

Files are JSON, keyed like calibration files (engines.calibration) by each engine's weights sha256 and its
calibration map: a baseline is refused for other weights, because its scores would mean something else.

**Voices.** The same rule and file learn a stream's voice bar (`modality: voice`): a stream's voice is one track,
its updates are the scored windows (the voice engines' p(fake) per window, fused and smoothed under the voice's own
policy), windows without enough speech are the gated ones, and `fps` is windows per second (1 / hop). A file says
which modality it is for and is refused for the other one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engines.calibration import (CalibrationError, calibration_of, check_weights, logit, read_json, sigmoid, validated,
                                 write_file)
from stream.config.verdicts import VerdictPolicy
from stream.live.scoring import Fusion as ScoreFusion
from stream.live.verdicts.bounds import (block_levels, conformal_lower, conformal_rank,  # noqa: F401 (re-exported)
                                         conformal_threshold, held_levels, t_bound)
from stream.live.verdicts.policy import SEVERITY, TrackVerdict, Verdict

BASELINE_FORMAT = "dfstream-baseline"
Modality = Literal["face", "voice"]
# How a modality's updates are named in refusals and summaries: (one update, updates, where they come from).
UNITS: dict[str, tuple[str, str, str]] = {"face": ("face-frame", "faces", "of one face"),
                                          "voice": ("window", "voice windows", "of speech")}
FORMAT_VERSION = 1
Fusion = Callable[[Mapping[str, float]], float | None]
EngineScores = Mapping[str, float]


class BaselineError(CalibrationError):
    """A baseline that cannot be learned or used: the message says why and what to do."""


class EngineKey(BaseModel):
    """One engine a baseline was learned with: its weights and (if any) its calibration map, by sha256."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(description="registry name of the engine")
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of its weights file")
    calibration_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                           description="sha256 of its calibration map's JSON, if one was applied")


class LowerBar(BaseModel):
    """A camera's lower bar (direction both): below it, held for k updates, a face is called unlike this camera."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rule: Literal["conformal", "bounded"] = Field(description="which bound set the lower bar before its limits")
    conformal: float | None = Field(description="the lower conformal bound, p(fake); null when it is -inf")
    bound: float = Field(description="the bound before its limits (p(fake))")
    min_seen: float = Field(description="lowest level the footage's smoothed p(fake) held for k updates")
    clipped: Literal["margin", "t_low"] | None = Field(
        default=None, description="which limit moved the lower bar: the floor margin below min_seen, or t_low")
    threshold: float = Field(gt=0, lt=1, description="the camera's t_under: p(fake) at or below which a face held "
                                                     "k updates is called unlike this camera")
    levels: list[float] = Field(description="each block's lowest level held for k updates, in order")


class Baseline(BaseModel):
    """A camera's learned bar: what it was learned with, from how much footage, and the rule that set it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["dfstream-baseline"] = BASELINE_FORMAT
    version: Literal[1] = FORMAT_VERSION
    modality: Modality = Field(default="face", description="what it judges: faces, or a stream's voice (files "
                               "older than voice baselines are face baselines)")
    model: str = Field(description="the model as named on the command line (engines joined by +, or an ensemble)")
    engines: list[EngineKey] = Field(min_length=1, description="each engine's weights and calibration")
    ensemble_sha256: str | None = Field(default=None, description="sha256 of the stacked ensemble, if one fused")
    policy: VerdictPolicy = Field(description="the verdict policy it was learned under (global bar, smoothing)")
    fps: float | None = Field(default=None, gt=0, description="analysed frames per second of the footage (a voice "
                              "baseline: scored windows per second, 1 / hop)")
    source: str = Field(description="where the footage came from, credentials redacted")
    learned_at: str = Field(description="when it was learned (ISO 8601, UTC)")
    faces: int = Field(ge=0, description="updates judged: face-frames, or a voice baseline's scored windows")
    gated: int = Field(default=0, ge=0, description="updates left out below the quality gate (a voice baseline: "
                       "windows without enough speech)")
    n_eff: int = Field(ge=1, description="effective samples: blocks of `block` smoothed updates")
    block: int = Field(gt=0, description="smoothed updates per block")
    alpha: float = Field(gt=0, lt=1, description="the false-alarm rate asked for")
    rule: Literal["conformal", "bounded"] = Field(description="which bound set the bar before floor and ceiling")
    conformal: float | None = Field(description="the conformal bound, p(fake); null when it is +inf")
    bound: float = Field(description="the bound after rule 1 or 2, before floor and ceiling (p(fake))")
    max_seen: float = Field(description="highest level the footage's smoothed p(fake) held for k updates")
    clipped: Literal["floor", "ceiling"] | None = Field(
        default=None, description="which limit moved the bar: the floor (or t_high for the bounded rule) or the ceiling")
    threshold: float = Field(gt=0, lt=1, description="the camera's t_high: p(fake) at or above which it alerts")
    t_low: float = Field(gt=0, lt=1, description="the camera's t_low, shifted like t_high")
    levels: list[float] = Field(description="each block's highest level held for k updates, in order")
    under: LowerBar | None = Field(default=None, description="the lower bar, learned with direction both (null: "
                                                             "direction above, and files older than it)")

    @model_validator(mode="after")
    def _direction(self) -> "Baseline":
        if (self.policy.baseline.direction == "both") != (self.under is not None):
            raise ValueError(f"direction {self.policy.baseline.direction} "
                             f"{'needs' if self.under is None else 'has no'} lower bar (under)")
        if self.under is not None and self.under.threshold >= self.t_low:
            raise ValueError(f"under.threshold ({self.under.threshold}) must be below t_low ({self.t_low})")
        return self

    def verdict_policy(self) -> VerdictPolicy:
        """The learned-under policy with the camera's thresholds: what a `TrackVerdict` of this camera runs."""
        u = self.under
        return self.policy.model_copy(update={
            "t_high": self.threshold, "t_low": self.t_low, "t_under": u.threshold if u else None,
            "t_under_release": min(max(u.min_seen, u.threshold), self.t_low) if u else None})

    def judge(self, track: Iterable[EngineScores], fusion: Fusion | None = None) -> TrackJudgement:
        """Run one track's engine scores (in time order) through the camera's rolling verdict."""
        return run_track(track, self.verdict_policy(), fusion)

    def summary(self) -> str:
        """One line for a console: faces, effective samples, the bar, alpha and how it was set."""
        how = self.rule + (f", clipped at the {self.clipped}" if self.clipped else "")
        out = (f"{self.faces} {UNITS[self.modality][1]}, {self.n_eff} effective samples (blocks of {self.block}), threshold "
               f"{self.threshold:.4f} (global {self.policy.t_high:g}), alpha {self.alpha:g}, {how}")
        if self.under is not None:
            u = self.under
            out += (f"; unlike this camera at or below {u.threshold:.4g} ({u.rule}"
                    + (f", clipped at the {u.clipped}" if u.clipped else "") + "; alpha split between the bars)")
        return out


@dataclass(frozen=True, slots=True)
class TrackJudgement:
    """One track judged over time: its worst verdict, when it first turned fake, its peak smoothed score."""

    verdict: Verdict | None  # None: no update (no judged face)
    updates: int
    peak: float | None
    fake_at: int | None  # the update that turned it fake
    reason: str | None = None  # why it turned fake: policy.UNLIKE_CAMERA for the lower bar, else None


def run_track(track: Iterable[EngineScores], policy: VerdictPolicy, fusion: Fusion | None = None
              ) -> TrackJudgement:
    """A fresh `TrackVerdict` fed one track's engine scores, fused as the judge fuses them; the worst verdict it
    reached."""
    state, fused = TrackVerdict(policy), _fusion(policy, fusion)
    worst: Verdict | None = None
    updates, peak, fake_at, reason = 0, None, None, None
    for scores in track:
        verdict = state.update(fused(scores))
        if state.smoothed is None:
            continue
        updates += 1
        peak = state.smoothed if peak is None else max(peak, state.smoothed)
        if verdict == "fake" and fake_at is None:
            fake_at, reason = updates - 1, state.reason
        worst = verdict if worst is None or SEVERITY[verdict] > SEVERITY[worst] else worst
    return TrackJudgement(worst, updates, peak, fake_at, reason)


def smoothed_series(track: Iterable[EngineScores], policy: VerdictPolicy, fusion: Fusion | None = None
                    ) -> list[float]:
    """The smoothed, fused score after each update of a fresh `TrackVerdict`: what the verdict compares."""
    state, fused = TrackVerdict(policy), _fusion(policy, fusion)
    out = []
    for scores in track:
        state.update(fused(scores))
        if state.smoothed is not None:
            out.append(float(state.smoothed))
    return out


def _fusion(policy: VerdictPolicy, fusion: Fusion | None) -> Fusion:
    """The given fusion (the scorer's: an ensemble's stacking), else the policy's weighted mean, as the judge has."""
    return fusion if fusion is not None else ScoreFusion(policy.weights)


def block_size(policy: VerdictPolicy) -> int:
    """Smoothed updates per effective sample: the median window (blocks share no input), or about the span of
    an EMA (2 / ema_alpha updates hold 86 % of its weight at 0.3)."""
    if policy.baseline.block is not None:
        size = policy.baseline.block
    else:
        size = policy.window if policy.smoothing == "median" else math.ceil(2.0 / policy.ema_alpha)
    return max(size, policy.k)  # a block holds at least one run of k updates


def fit(tracks: Sequence[Sequence[EngineScores]], policy: VerdictPolicy, *, model: str,
        engines: Sequence[EngineKey], source: str, fps: float | None = None, gated: int = 0,
        gated_reason: str | None = None, fusion: Fusion | None = None, ensemble_sha256: str | None = None,
        learned_at: str | None = None, modality: Modality = "face") -> Baseline:
    """Learn a camera's bar from its known-real footage: per track, the judged faces' engine scores in time
    order (faces below the quality gate left out and counted in `gated`; a voice: its one track of scored windows,
    windows without enough speech counted in `gated`). Raises BaselineError for footage that cannot vouch for the
    camera: nothing judged, a stretch the global bar already calls fake, too few blocks."""
    bp = policy.baseline
    tracks = [list(t) for t in tracks if len(t)]
    faces = sum(len(t) for t in tracks)
    if not faces:
        raise BaselineError(_nothing_judged(modality, gated, gated_reason))
    if not bp.learn_on_fake:
        for i, t in enumerate(tracks):
            judged = run_track(t, policy, fusion)
            if judged.verdict == "fake":
                raise BaselineError(
                    f"the model already calls this stretch fake ({'face' if modality == 'face' else 'voice'} "
                    f"{i + 1}, smoothed p(fake) up to "
                    f"{judged.peak:.3f} >= t_high {policy.t_high:g}); a baseline vouches for real footage only. "
                    "If the camera is known to be noisy, allow it with verdict.baseline.learn_on_fake "
                    "(--allow-fake)")
    series = [smoothed_series(t, policy, fusion) for t in tracks]
    block = block_size(policy)
    levels = block_levels(series, block, policy.k)
    if len(levels) < bp.min_effective:
        raise BaselineError(_too_few(len(levels), series, block, bp.min_effective, fps, modality))
    alpha = bp.alpha
    tail = alpha / 2 if bp.direction == "both" else alpha  # alpha split between the two bars
    top = max(float(held_levels(s, policy.k).max(initial=0.0)) for s in series)
    q = conformal_threshold(levels, tail)
    if math.isfinite(q):
        rule, bound = "conformal", float(np.nextafter(logit(np.array(q)), math.inf))  # alerts only above q
    else:
        rule, bound = "bounded", max(t_bound(logit(np.array(levels)), tail), float(logit(np.array(top))))
    t_high = float(logit(np.array(policy.t_high)))
    lo = float(logit(np.array(bp.floor))) if rule == "conformal" else t_high  # only a guarantee may lower it
    hi = max(t_high, float(logit(np.array(top))) + bp.ceiling_margin)
    clipped = "floor" if bound < lo else "ceiling" if bound > hi else None
    bar = float(np.clip(bound, lo, hi))
    shift = bar - t_high
    t_low = float(sigmoid(logit(np.array(policy.t_low)) + shift))
    under = _lower_bar(series, policy, block, tail, t_low) if bp.direction == "both" else None
    return Baseline(
        modality=modality, model=model, engines=list(engines), ensemble_sha256=ensemble_sha256, policy=policy, fps=fps,
        source=source, learned_at=learned_at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        faces=faces, gated=gated, n_eff=len(levels), block=block, alpha=alpha, rule=rule,
        conformal=None if math.isinf(q) else q, bound=float(sigmoid(np.array(bound))), max_seen=top,
        clipped=clipped, threshold=float(sigmoid(np.array(bar))),
        t_low=t_low, levels=levels, under=under)


def _lower_bar(series: Sequence[Sequence[float]], policy: VerdictPolicy, block: int, alpha: float, t_low: float
               ) -> LowerBar:
    """The lower bar, mirroring the upper one in logits, with L the lowest held-low level seen: conformal (the
    k-th largest block level, flagging only below it) where finite, else the Student-t lower bound and never above
    L; then never below L - floor_margin (a face held far below everything the camera showed is always flagged,
    and ordinary downward drift up to the margin never is) and always below the camera's t_low."""
    levels = block_levels(series, block, policy.k, low=True)
    low = min(float(held_levels(s, policy.k, low=True).min(initial=1.0)) for s in series)
    q = conformal_lower(levels, alpha)
    if math.isfinite(q):
        rule, bound = "conformal", float(np.nextafter(logit(np.array(q)), -math.inf))
    else:
        rule, bound = "bounded", min(t_bound(logit(np.array(levels)), alpha, lower=True), float(logit(np.array(low))))
    lo = float(logit(np.array(low))) - policy.baseline.floor_margin
    hi = float(np.nextafter(logit(np.array(t_low)), -math.inf))
    bar = min(max(bound, lo), hi)
    clipped = "t_low" if bar < max(bound, lo) else "margin" if bar > bound else None
    threshold = float(np.nextafter(q, 0.0)) if clipped is None and rule == "conformal" else float(sigmoid(np.array(bar)))
    return LowerBar(rule=rule, conformal=None if math.isinf(q) else q, bound=float(sigmoid(np.array(bound))),
                    min_seen=low, clipped=clipped, threshold=min(threshold, float(np.nextafter(t_low, 0.0))),
                    levels=levels)


def _nothing_judged(modality: Modality, gated: int, reason: str | None) -> str:
    """The refusal for footage with nothing to learn from: all of it below the quality gate, or none found."""
    if modality == "voice":
        if gated:
            return (f"too little speech: none of the {gated} voice windows held enough speech to judge "
                    f"({reason or 'no speech'}); learn while someone speaks")
        return "no voice window was scored: the stream had no sound (a voice baseline is learned from speech)"
    if gated:
        return (f"a low-quality stretch: all {gated} faces are below the quality gate "
                f"({reason or 'too small or blurred'}); learn from footage where faces are larger and sharper")
    return "no face was found in the footage: a baseline is learned from faces"


def _too_few(have: int, series: Sequence[Sequence[float]], block: int, need: int, fps: float | None,
             modality: Modality = "face") -> str:
    """The refusal for too short a stretch: how much more footage of one face (or of speech) would do."""
    one, _, of = UNITS[modality]
    updates = (need - have) * block - max(len(s) % block for s in series)
    rate = "analysed fps" if modality == "face" else "windows a second"
    more = (f"{math.ceil(updates / fps)} s more {of} (at {fps:g} {rate})" if fps
            else f"{updates} more {one}s {of}")
    return (f"too few effective samples: {have} block(s) of {block} smoothed updates, {need} needed; "
            f"learn from {more}")


# -- the file ---------------------------------------------------------------------------------------------------

def sha256_json(item: BaseModel) -> str:
    """A record's fingerprint: sha256 of its canonical JSON (what a baseline stores of a calibration map)."""
    return hashlib.sha256(json.dumps(item.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def read(path: Path) -> Baseline:
    """A baseline file, validated; BaselineError says what is wrong with it."""
    try:
        data = read_json(path, "baseline")
    except CalibrationError as exc:
        raise BaselineError(str(exc)) from None
    if data.get("format") != BASELINE_FORMAT:
        raise BaselineError(f"{path}: not a baseline file (format {data.get('format')!r}, expected "
                            f"{BASELINE_FORMAT!r})")
    return validated(Baseline, data, path, "baseline", BaselineError)


def write(baseline: Baseline, path: Path) -> Path:
    """Write atomically: an existing file is replaced only by a complete new one."""
    return write_file(baseline, path)


def engine_keys(engines: Sequence[object]) -> list[EngineKey]:
    """What a baseline is keyed by: each engine's weights and calibration map."""
    out = []
    for e in engines:
        cal = calibration_of(e)
        out.append(EngineKey(model=e.name, weights_sha256=e.weights_sha256,  # type: ignore[attr-defined]
                             calibration_sha256=sha256_json(cal) if cal is not None else None))
    return out


def check(baseline: Baseline, path: Path, engines: Sequence[EngineKey], ensemble_sha256: str | None = None,
          modality: Modality = "face") -> None:
    """Refuse a baseline of the other modality, or learned with other engines, other weights, another calibration
    or another ensemble."""
    if baseline.modality != modality:
        raise BaselineError(f"{path}: a {baseline.modality} baseline (learned with {baseline.model!r}), not a "
                            f"{modality} one: it judges {UNITS[baseline.modality][1]}, not "
                            f"{UNITS[modality][1]}")
    have = {e.model: e for e in engines}
    if sorted(have) != sorted(e.model for e in baseline.engines):
        raise BaselineError(f"{path}: learned with {baseline.model!r} "
                            f"({', '.join(e.model for e in baseline.engines)}), not {', '.join(sorted(have))}")
    for key in baseline.engines:
        try:
            check_weights(key, path, key.model, have[key.model].weights_sha256, remedy="learn it again with "
                          "dfstream baseline")
        except CalibrationError as exc:
            raise BaselineError(str(exc)) from None
        if key.calibration_sha256 != have[key.model].calibration_sha256:
            raise BaselineError(f"{path}: learned with {'another' if key.calibration_sha256 else 'no'} calibration "
                                f"map for {key.model}; its scores would mean something else: learn it again")
    if baseline.ensemble_sha256 != ensemble_sha256:
        raise BaselineError(f"{path}: learned with another ensemble (or none): learn it again")
