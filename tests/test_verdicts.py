"""Verdict policy driven by synthetic score sequences: fusion, smoothing, hysteresis without flapping."""

import numpy as np
import pytest
from pydantic import ValidationError

from stream.live.scoring import fuse
from stream.live.verdicts.policy import TrackVerdict, VerdictPolicy, worst


def run(policy: VerdictPolicy, scores: list[float]) -> list[str]:
    tv = TrackVerdict(policy)
    return [tv.update(s) for s in scores]


def changes(verdicts: list[str]) -> int:
    return sum(a != b for a, b in zip(verdicts, verdicts[1:]))


def test_weighted_fusion():
    w = VerdictPolicy(weights={"a": 3.0, "b": 1.0}).weights
    assert fuse({"a": 1.0, "b": 0.0}, w) == pytest.approx(0.75)
    assert fuse({"a": 0.2, "c": 0.6}, w) == pytest.approx((3 * 0.2 + 0.6) / 4)  # unnamed engine weighs 1
    assert fuse({}, w) is None
    with pytest.raises(ValueError, match="sum to zero"):
        fuse({"a": 0.5}, {"a": 0.0})


def test_needs_k_updates_to_turn_fake_and_k_to_return():
    p = VerdictPolicy(smoothing="ema", ema_alpha=1.0, k=3, t_high=0.7, t_low=0.3)
    v = run(p, [0.9, 0.9, 0.9, 0.5, 0.2, 0.2, 0.2])
    assert v == ["uncertain", "uncertain", "fake", "fake", "fake", "fake", "real"]


def test_score_wavering_around_a_threshold_does_not_flap():
    rng = np.random.default_rng(0)
    noisy = list(0.7 + rng.uniform(-0.08, 0.08, size=200))  # hovers across t_high
    for smoothing in ("median", "ema"):
        v = run(VerdictPolicy(smoothing=smoothing, k=3), noisy)
        assert changes(v) <= 1, smoothing  # may settle once, never oscillates
    alternating = [0.95, 0.05] * 50  # worst case: every update crosses both thresholds
    assert set(run(VerdictPolicy(smoothing="ema", ema_alpha=1.0, k=2), alternating)) == {"uncertain"}


def test_median_ignores_single_frame_spikes():
    seq = [0.1] * 10 + [0.99] + [0.1] * 10
    assert "fake" not in run(VerdictPolicy(smoothing="median", window=5, k=1), seq)


def test_stream_verdict_is_worst_track():
    assert worst(["real", "uncertain"]) == "uncertain"
    assert worst(["real", "fake", "uncertain"]) == "fake"
    assert worst([]) is None


def test_policy_validation():
    with pytest.raises(ValidationError):
        VerdictPolicy(t_low=0.8, t_high=0.6)
    with pytest.raises(ValidationError):
        VerdictPolicy(unknown=1)
