"""The opt-in two-sided camera bar (`verdict.baseline.direction: both`, stream/live/verdicts/baseline.py and
bounds.py): the lower conformal bound against a brute-force order statistic, both directions judged (above the
bar, below the lower bar as "unlike this camera", inside neither), the floor margin, the lower band's hysteresis,
old files loading as "above", and malformed directions refused without changing anything."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from pydantic import ValidationError

from stream.config.verdicts import BaselinePolicy, VerdictPolicy
from stream.live.verdicts.baseline import (Baseline, BaselineError, EngineKey, block_levels, conformal_lower, fit,
                                           read, run_track, write)
from stream.live.verdicts.policy import UNLIKE_CAMERA, TrackVerdict

ENGINE = "meso4-f2f"
KEYS = [EngineKey(model=ENGINE, weights_sha256="a" * 64)]


def _track(scores) -> list[dict[str, float]]:
    return [{ENGINE: float(s)} for s in scores]


def _fit(tracks, **baseline) -> Baseline:
    policy = VerdictPolicy(baseline=BaselinePolicy(**baseline))
    return fit([_track(t) for t in tracks], policy, model=ENGINE, engines=KEYS, source="cam", fps=5.0)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# -- the lower bound ----------------------------------------------------------------------------------------------

def _brute_force_lower(scores: list[float], alpha: float) -> float:
    """The largest score c with at least k = ceil((n + 1)(1 - alpha)) scores >= c, counted one by one, with exact
    rational arithmetic on the alpha that was meant."""
    n = len(scores)
    k = math.ceil((n + 1) * (1 - Fraction(alpha).limit_denominator(10_000)))
    for c in sorted(set(scores), reverse=True):
        if sum(s >= c for s in scores) >= k:
            return c
    return -math.inf


def test_the_lower_bound_is_the_order_statistic_over_random_n_alpha_and_ties():
    rng = np.random.default_rng(11)
    cases = [(99, 0.01), (19, 0.05), (9, 0.1), (98, 0.01), (1, 0.5), (3, 0.25), (4, 0.2), (9, 0.7)]
    cases += [(int(rng.integers(1, 150)), float(rng.choice([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5])))
              for _ in range(1500)]
    for n, alpha in cases:
        scores = (rng.integers(0, max(2, n // 3), n) / 10).tolist()  # few distinct values: many ties
        assert conformal_lower(scores, alpha) == _brute_force_lower(scores, alpha), (n, alpha, scores)


def test_the_lower_bound_keeps_its_rate_on_exchangeable_scores():
    rng = np.random.default_rng(5)
    for n, alpha in [(19, 0.1), (39, 0.05)]:
        draws = rng.normal(size=(4000, n + 1))
        below = [row[-1] < conformal_lower(row[:-1].tolist(), alpha) for row in draws]
        assert np.mean(below) <= alpha + 0.015


def test_low_block_levels_are_each_blocks_lowest_run_held_below():
    rng = np.random.default_rng(2)
    series = [rng.uniform(0, 1, n).tolist() for n in (40, 9, 8, 23)]
    want = []
    for s in series:  # brute force: per complete block, the lowest bar some run of 3 stays at or below
        for b in range(0, len(s) - 9 + 1, 9):
            want.append(min(max(s[i:i + 3]) for i in range(b, b + 9 - 3 + 1)))
    assert block_levels(series, block=9, k=3, low=True) == pytest.approx(want)


def test_a_fitted_conformal_lower_bar_flags_only_below_the_bound_at_half_alpha():
    rng = np.random.default_rng(4)
    b = _fit([_sigmoid_series(rng, 400)], direction="both", alpha=0.2)  # 44 blocks: finite at alpha / 2 = 0.1
    u = b.under
    assert u.rule == "conformal" and u.conformal == conformal_lower(u.levels, 0.1)
    assert u.conformal == _brute_force_lower(u.levels, 0.1)
    assert u.threshold < u.conformal == pytest.approx(u.threshold)  # flags strictly below the bound only
    assert b.judge(_track(np.full(12, u.conformal))).verdict != "fake"
    assert b.judge(_track(np.full(12, u.conformal * 0.99))).reason == UNLIKE_CAMERA


def _sigmoid_series(rng, n: int) -> np.ndarray:
    return 1 / (1 + np.exp(-rng.normal(-2.0, 0.3, n)))


# -- both directions ----------------------------------------------------------------------------------------------

def test_above_the_bar_and_below_the_lower_bar_are_called_and_inside_is_not():
    b = _fit([np.repeat([0.05, 0.08, 0.06, 0.1], 9)], direction="both")  # 4 blocks: bounded, the margins set it
    assert b.under is not None and b.under.rule == "bounded"
    above = b.judge(_track(np.full(12, 0.95)))
    below = b.judge(_track(np.full(12, 0.001)))
    inside = b.judge(_track(np.full(12, 0.07)))
    assert (above.verdict, above.reason) == ("fake", None)
    assert (below.verdict, below.reason) == ("fake", UNLIKE_CAMERA)
    assert inside.verdict != "fake"
    one_sided = _fit([np.repeat([0.05, 0.08, 0.06, 0.1], 9)])  # the default: only above
    assert one_sided.under is None and one_sided.judge(_track(np.full(12, 0.001))).verdict != "fake"
    state = TrackVerdict(b.verdict_policy())  # the live judge's state carries the reason
    for s in np.full(12, 0.001):
        state.update(float(s))
    assert (state.verdict, state.reason) == ("fake", UNLIKE_CAMERA)


def test_the_floor_margin_mirrors_the_ceiling_a_face_far_below_is_flagged_drift_within_it_is_not():
    b = _fit([np.repeat([0.03, 0.2, 0.05, 0.25], 9)], direction="both", floor_margin=1.0)  # t-bound far below
    u = b.under
    assert u.clipped == "margin" and u.min_seen == pytest.approx(0.03) and u.bound < u.threshold
    assert u.threshold == pytest.approx(_sigmoid(_logit(0.03) - 1.0))
    assert b.judge(_track(np.full(12, _sigmoid(_logit(0.03) - 0.8)))).verdict != "fake"  # drift within the margin
    assert b.judge(_track(np.full(12, _sigmoid(_logit(0.03) - 1.2)))).reason == UNLIKE_CAMERA


def test_the_lower_band_does_not_flap_and_the_cameras_own_footage_returns_to_real():
    b = _fit([np.repeat([0.05, 0.08, 0.06, 0.1], 9)], direction="both")
    policy = b.verdict_policy()
    assert policy.t_under < policy.t_under_release == pytest.approx(0.05)
    rng = np.random.default_rng(0)
    state, seen = TrackVerdict(policy), []
    for s in policy.t_under * np.exp(rng.uniform(-0.3, 0.3, 200)):  # hovers across the lower bar
        seen.append(state.update(float(s)))
    assert sum(a != c for a, c in zip(seen, seen[1:])) <= 1
    state = TrackVerdict(policy)
    verdicts = [state.update(s) for s in [0.001] * 12 + [0.07] * 12]
    assert "fake" in verdicts and verdicts[-1] == "real" and state.reason is None


# -- the file -----------------------------------------------------------------------------------------------------

def test_a_two_sided_baseline_round_trips(tmp_path):
    b = _fit([np.repeat([0.05, 0.08, 0.06, 0.1], 9)], direction="both")
    assert read(write(b, tmp_path / "b.json")) == b
    assert "unlike this camera at or below" in b.summary()


def test_an_old_file_without_the_fields_loads_as_above(tmp_path):
    data = json.loads(write(_fit([np.full(30, 0.05)]), tmp_path / "new.json").read_text())
    for key in ("direction", "floor_margin"):
        del data["policy"]["baseline"][key]
    for key in ("t_under", "t_under_release"):
        del data["policy"][key]
    del data["under"]  # a file as written before the two-sided rule existed
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = read(path)
    assert old.policy.baseline.direction == "above" and old.under is None
    assert old.verdict_policy().t_under is None
    assert old.judge(_track(np.full(12, 0.0001))).verdict != "fake"


@pytest.mark.parametrize("edit, says", [
    (lambda d: d["policy"]["baseline"].update(direction="below"), "direction: Input should be 'above' or 'both'"),
    (lambda d: d["policy"]["baseline"].update(direction=2), "direction"),
    (lambda d: d.update(under=None), "lower bar"),
    (lambda d: d["under"].update(threshold=0.9), "must be below t_low"),
], ids=["unknown-word", "not-a-word", "both-without-under", "under-above-t_low"])
def test_a_malformed_direction_is_refused_and_the_file_left_as_it_was(tmp_path, edit, says):
    data = json.loads(write(_fit([np.repeat([0.05, 0.08, 0.06, 0.1], 9)], direction="both"),
                            tmp_path / "ok.json").read_text())
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    with pytest.raises(BaselineError, match=says):
        read(path)
    assert path.read_bytes() == before


def test_a_malformed_direction_in_the_config_is_refused():
    with pytest.raises(ValidationError, match="direction"):
        VerdictPolicy.model_validate({"baseline": {"direction": "below"}})
    with pytest.raises(ValidationError, match="t_under"):
        VerdictPolicy(t_under=0.4)  # at or above t_low 0.3
    with pytest.raises(ValidationError, match="t_under_release"):
        VerdictPolicy(t_under_release=0.1)  # a release without a lower bar
    assert VerdictPolicy().baseline.direction == "above"
    assert run_track(_track(np.full(12, 0.0001)), VerdictPolicy()).verdict != "fake"  # the global bar: no floor


def test_the_command_line_opts_in_and_refuses_another_direction(tmp_path, capsys):
    import argparse

    from stream.cli import main
    from stream.cli.baseline import policy_for

    args = argparse.Namespace(alpha=None, allow_fake=False, direction="both")
    assert policy_for(args).baseline.direction == "both"
    assert policy_for(argparse.Namespace(alpha=None, allow_fake=False, direction=None)).baseline.direction == "above"
    out = tmp_path / "cam.json"
    out.write_text("kept")
    with pytest.raises(SystemExit) as exc:  # argparse refuses before any model loads
        main(["baseline", "clip.mp4", "--out", str(out), "--direction", "below"])
    assert exc.value.code == 2 and "invalid choice: 'below'" in capsys.readouterr().err
    assert out.read_text() == "kept"
