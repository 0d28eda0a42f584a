"""Per-camera baselines, the pure part (stream/live/verdicts/baseline.py): the conformal bound against a brute-force
order statistic, effective samples, the floor and the ceiling in both directions, refusals (too short, already
fake, low-quality) and the file (round trip, malformed files, other weights / engines / calibration / ensemble)."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from stream.config.verdicts import BaselinePolicy, VerdictPolicy
from stream.live.verdicts.baseline import (Baseline, BaselineError, EngineKey, block_levels, check,
                                           conformal_threshold, fit, held_levels, read, run_track, write)

SHA, OTHER = "a" * 64, "b" * 64
KEYS = [EngineKey(model="meso4-f2f", weights_sha256=SHA)]
ENGINE = "meso4-f2f"


def _track(scores) -> list[dict[str, float]]:
    return [{ENGINE: float(s)} for s in scores]


def _policy(**baseline) -> VerdictPolicy:
    return VerdictPolicy(baseline=BaselinePolicy(**baseline))


def _fit(tracks, policy=None, **kw) -> Baseline:
    return fit([_track(t) for t in tracks], policy or _policy(), model=ENGINE, engines=KEYS, source="cam",
               fps=5.0, **kw)


# -- the conformal bound -------------------------------------------------------------------------------------

def _brute_force(scores: list[float], alpha: float) -> float:
    """The smallest score c with at least k = ceil((n + 1)(1 - alpha)) scores <= c, counted one by one, with
    exact rational arithmetic on the alpha that was meant (its short decimal)."""
    n = len(scores)
    k = math.ceil((n + 1) * (1 - Fraction(alpha).limit_denominator(10_000)))
    for c in sorted(set(scores)):
        if sum(s <= c for s in scores) >= k:
            return c
    return math.inf


def test_conformal_threshold_is_the_order_statistic_over_random_n_alpha_and_ties():
    rng = np.random.default_rng(7)
    # (n+1)(1-a) integral, where float rounding can push the rank one up (0.3 * 10 = 3.0000000000000004)
    cases = [(99, 0.01), (19, 0.05), (9, 0.1), (98, 0.01), (1, 0.5), (3, 0.25), (4, 0.2), (9, 0.7), (99, 0.7)]
    cases += [(int(rng.integers(1, 150)), float(rng.choice([0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7])))
              for _ in range(1500)]
    for n, alpha in cases:
        scores = (rng.integers(0, max(2, n // 3), n) / 10).tolist()  # few distinct values: many ties
        assert conformal_threshold(scores, alpha) == _brute_force(scores, alpha), (n, alpha, scores)


def test_conformal_threshold_keeps_the_false_alarm_rate_on_exchangeable_scores():
    rng = np.random.default_rng(3)
    for n, alpha in [(19, 0.1), (49, 0.05), (9, 0.2)]:
        draws = rng.normal(size=(4000, n + 1))
        exceed = [row[-1] > conformal_threshold(row[:-1].tolist(), alpha) for row in draws]
        assert np.mean(exceed) <= alpha + 0.015  # exactly alpha-ish (n+1)(1-alpha) integral; 4000 draws


def test_conformal_threshold_is_infinite_when_the_rank_passes_n():
    assert conformal_threshold([0.1] * 98, 0.01) == math.inf  # k = 99 > 98
    assert conformal_threshold([0.1] * 99, 0.01) == 0.1
    with pytest.raises(ValueError):
        conformal_threshold([0.1, 0.2], 0.0)


# -- effective samples ------------------------------------------------------------------------------------------

def test_effective_samples_are_complete_blocks_per_track_of_levels_held_k_updates():
    assert len(block_levels([[0.1] * 20, [0.1] * 8, [0.1] * 9], block=9, k=3)) == 2 + 0 + 1
    spike = [0.1] * 4 + [0.9] + [0.1] * 4  # one update high: the verdict (k = 3) never sees it
    held = [0.1] * 3 + [0.8] * 3 + [0.1] * 3  # three updates high: the verdict would
    assert block_levels([spike], 9, 3) == [pytest.approx(0.1)]
    assert block_levels([held], 9, 3) == [pytest.approx(0.8)]
    np.testing.assert_allclose(held_levels([0.5, 0.9, 0.7, 0.8], 3), [0.5, 0.7])


def test_fit_counts_blocks_of_the_smoothed_track_score_and_states_them():
    b = _fit([np.full(45, 0.05), np.full(20, 0.05)])  # 5 + 2 blocks of the median window (9)
    assert (b.faces, b.n_eff, b.block) == (65, 7, 9)
    assert "65 faces, 7 effective samples" in b.summary() and "alpha 0.01" in b.summary()


def test_too_few_effective_samples_are_refused_with_the_seconds_still_needed():
    with pytest.raises(BaselineError, match=r"1 block\(s\) of 9 smoothed updates, 2 needed; learn from 2 s more"):
        _fit([np.full(10, 0.05)])  # 10 updates at 5 fps: one block, 8 more updates (1.6 s) for the second
    with pytest.raises(BaselineError, match=r"learn from 1 s more of one face"):
        _fit([np.full(14, 0.05)])  # 5 updates into the second block: 4 more (0.8 s)


# -- refusals of footage that cannot vouch ----------------------------------------------------------------------

def test_a_stretch_the_global_bar_calls_fake_is_refused_unless_allowed():
    tracks = [np.r_[np.full(20, 0.1), np.full(10, 0.95), np.full(20, 0.1)]]  # the median turns fake mid-way
    assert run_track(_track(tracks[0]), VerdictPolicy()).verdict == "fake"
    with pytest.raises(BaselineError, match="already calls this stretch fake"):
        _fit(tracks)
    assert _fit(tracks, _policy(learn_on_fake=True)).threshold > 0.95


def test_a_low_quality_stretch_is_refused():
    with pytest.raises(BaselineError, match="low-quality stretch: all 12 faces are below the quality gate"):
        fit([], _policy(), model=ENGINE, engines=KEYS, source="cam", fps=5.0, gated=12,
            gated_reason="face 40 px < 64 px for meso4-f2f")
    with pytest.raises(BaselineError, match="no face"):
        fit([[]], _policy(), model=ENGINE, engines=KEYS, source="cam")


# -- the floor and the ceiling ----------------------------------------------------------------------------------

def _levels_fit(level_values, **baseline) -> Baseline:
    """A baseline whose blocks hold the given levels (each block: 9 updates at that value)."""
    return _fit([np.repeat(level_values, 9)], _policy(**baseline))


def test_the_floor_a_quiet_camera_bar_drops_no_lower_than_the_floor():
    quiet = _levels_fit(np.full(40, 0.01), alpha=0.1)  # conformal is finite (40 blocks) and far below
    assert quiet.rule == "conformal" and quiet.conformal == pytest.approx(0.01)
    assert quiet.clipped == "floor" and quiet.threshold == pytest.approx(0.5)
    noise = _track(np.full(12, 0.45))  # later noise the model itself calls probably real: no alert
    assert quiet.judge(noise).verdict != "fake"
    assert run_track(noise, quiet.policy.model_copy(update={"t_high": quiet.conformal * 1.01})).verdict == "fake"


def test_the_floor_a_noisy_camera_never_alerts_more_than_the_global_bar():
    noisy = _levels_fit(np.linspace(0.72, 0.9, 40), alpha=0.1, learn_on_fake=True)
    assert noisy.threshold >= noisy.policy.t_high
    for level in np.linspace(0.0, 1.0, 41):  # any face the camera bar calls fake, the global bar calls fake too
        face = _track(np.full(12, level))
        if noisy.judge(face).verdict == "fake":
            assert run_track(face, noisy.policy).verdict == "fake"
    assert noisy.judge(_track(np.full(12, 0.85))).verdict != "fake"  # its own noise: quiet now


def test_the_ceiling_a_face_far_above_everything_seen_still_alerts():
    b = _levels_fit([0.9, 0.95, 0.93], learn_on_fake=True, ceiling_margin=1.0)  # bounded: t-bound far above
    assert b.rule == "bounded" and b.clipped == "ceiling"
    top = math.log(0.95 / 0.05)
    assert b.threshold == pytest.approx(1 / (1 + math.exp(-(top + 1.0))))
    far = 1 / (1 + math.exp(-(top + 1.2)))
    assert b.judge(_track(np.full(12, far))).verdict == "fake"
    assert b.judge(_track(np.full(12, 0.95))).verdict != "fake"  # what the camera showed as real


def test_the_ceiling_never_goes_below_the_global_bar():
    b = _levels_fit([0.01, 0.02, 0.015])  # few blocks: bounded; max seen + margin is far below t_high
    assert b.rule == "bounded" and b.threshold == pytest.approx(b.policy.t_high)
    assert b.t_low == pytest.approx(b.policy.t_low)


def test_t_low_moves_with_t_high_by_the_same_logit_shift():
    b = _levels_fit(np.linspace(0.72, 0.9, 40), alpha=0.1, learn_on_fake=True)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    assert logit(b.t_low) - logit(b.policy.t_low) == pytest.approx(logit(b.threshold) - logit(b.policy.t_high))
    assert b.verdict_policy().t_high == b.threshold and b.verdict_policy().window == b.policy.window


# -- the file ---------------------------------------------------------------------------------------------------

def test_write_read_round_trip(tmp_path):
    b = _fit([np.full(30, 0.05)])
    path = write(b, tmp_path / "cam.baseline.json")
    assert read(path) == b
    assert json.loads(path.read_text())["format"] == "dfstream-baseline"


def _valid(tmp_path) -> dict:
    return json.loads(write(_fit([np.full(30, 0.05)]), tmp_path / "ok.json").read_text())


@pytest.mark.parametrize("edit, says", [
    (lambda d: "not json", "not a readable JSON baseline"),
    (lambda d: [1, 2], "a baseline file is a JSON object"),
    (lambda d: {**d, "format": "dfstream-calibration"}, "not a baseline file"),
    (lambda d: {k: v for k, v in d.items() if k != "threshold"}, "threshold"),
    (lambda d: {**d, "threshold": 1.5}, "threshold"),
    (lambda d: {**d, "engines": [{"model": "m", "weights_sha256": "short"}]}, "weights_sha256"),
    (lambda d: {**d, "policy": {**d["policy"], "t_low": 0.9}}, "t_low"),
    (lambda d: {**d, "version": 2}, "version"),
], ids=["garbage", "not-object", "format", "missing", "range", "bad-sha", "bad-policy", "version"])
def test_malformed_files_are_refused_with_the_reason(tmp_path, edit, says):
    data = edit(_valid(tmp_path))
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    before = path.read_bytes()
    with pytest.raises(BaselineError, match=says):
        read(path)
    assert path.read_bytes() == before
    with pytest.raises(BaselineError, match="no such baseline file"):
        read(tmp_path / "missing.json")


@pytest.mark.parametrize("engines, ensemble, says", [
    ([EngineKey(model=ENGINE, weights_sha256=OTHER)], None, "other weights of meso4-f2f"),
    ([EngineKey(model="meso4-df", weights_sha256=SHA)], None, "learned with 'meso4-f2f'"),
    ([EngineKey(model=ENGINE, weights_sha256=SHA, calibration_sha256=OTHER)], None, "no calibration map"),
    (KEYS, OTHER, "another ensemble"),
], ids=["weights", "engine", "calibration", "ensemble"])
def test_a_baseline_is_refused_for_other_weights_engines_calibration_or_ensemble(tmp_path, engines, ensemble, says):
    b = _fit([np.full(30, 0.05)])
    check(b, tmp_path / "b.json", KEYS)  # its own engines: accepted
    with pytest.raises(BaselineError, match=says):
        check(b, tmp_path / "b.json", engines, ensemble)
