"""The order statistics and prediction bounds a camera baseline (baseline.py) is fitted with, for either tail.

Upper tail: the verdict turns fake when k consecutive smoothed updates reach t_high, so a run's level is the lowest
of its k scores, and a block's level the highest of its runs'. Lower tail (a baseline learned with `direction:
both`): a track is called unlike its camera when k consecutive smoothed updates stay at or below t_under, so a run's
level is the highest of its k scores, and a block's level the lowest of its runs'. Pure numpy; scipy only for the
Student-t bound (fitting, never the live judge).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def conformal_rank(n: int, alpha: float) -> int:
    """k = ceil((n + 1)(1 - alpha)), computed so that (n + 1)(1 - alpha) landing on an integer is not pushed
    up by rounding (n = 99, alpha = 0.01 gives 99, not 100)."""
    return math.ceil(round((n + 1) * (1.0 - alpha), 9))


def conformal_threshold(scores: Sequence[float], alpha: float) -> float:
    """The split-conformal bound: the k-th smallest of n scores, k = ceil((n + 1)(1 - alpha)); +inf when k > n.
    For exchangeable scores a new one exceeds it with probability at most alpha."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = len(scores)
    k = conformal_rank(n, alpha)
    return math.inf if k > n else float(np.sort(np.asarray(scores, dtype=np.float64))[k - 1])


def conformal_lower(scores: Sequence[float], alpha: float) -> float:
    """The lower split-conformal bound: the k-th largest of n scores, k = ceil((n + 1)(1 - alpha)); -inf when
    k > n. For exchangeable scores a new one falls below it with probability at most alpha."""
    return -conformal_threshold([-float(s) for s in scores], alpha)


def held_levels(series: Sequence[float], k: int, low: bool = False) -> np.ndarray:
    """For each run of k consecutive smoothed updates, the lowest of them (`low`: the highest): the highest bar
    the run stays at or above (the lowest bar it stays at or below). The verdict turns fake exactly when one of
    these reaches t_high (falls to t_under)."""
    s = np.asarray(series, dtype=np.float64)
    if len(s) < k:
        return np.empty(0)
    runs = np.lib.stride_tricks.sliding_window_view(s, k)
    return runs.max(axis=1) if low else runs.min(axis=1)


def block_levels(series: Iterable[Sequence[float]], block: int, k: int, low: bool = False) -> list[float]:
    """Each complete block's highest held level (`low`: its lowest held-low level), per track in order: the
    lowest (highest) bar the block would not have crossed. A track's last, incomplete block is left out."""
    out = []
    for s in series:
        held = held_levels(s, k, low)
        pick = np.min if low else np.max
        out += [float(pick(held[i:i + block - k + 1])) for i in range(0, len(s) - block + 1, block)]
    return out


def t_bound(x: Sequence[float], alpha: float, lower: bool = False) -> float:
    """Student-t upper (`lower`: lower) prediction bound of one more draw of a normal sample x (at least two
    values)."""
    from scipy.stats import t  # fitting only: the live judge never needs scipy

    x = np.asarray(x, dtype=np.float64)
    m = len(x)
    half = float(t.ppf(1.0 - alpha, m - 1) * x.std(ddof=1) * math.sqrt(1.0 + 1.0 / m))
    return float(x.mean()) - half if lower else float(x.mean()) + half
