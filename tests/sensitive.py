"""Random-weight reference networks that can tell their inputs apart, and the checks that prove a parity test can.

Why: a deep random network with made-up BatchNorm statistics maps every input to nearly the same output. The
random Xception140k the parity tests used gave p(fake) 0.494596-0.494597 for face crops, noise, zeros and negated
inputs alike, so a 1e-4 parity check passed whatever the backend was fed (channels swapped, or all zeros). Here:
- `fit_bn_stats` sets every BatchNorm's running statistics to those of real face crops (one forward pass, BN layers
  in train mode, under no_grad), so each layer's activations are normalised the way trained weights would be;
- `spread_linear` rescales a final Linear so its logits (or the two-class margin) spread across those crops;
- `assert_spread` is the first assertion of every parity test: the reference's own outputs must vary across
  inputs by far more than the tolerance, or the test fails instead of passing blind;
- `SessionInputBug` and `swap_channels` / `blank` inject the bugs a parity test must catch, so a test can prove,
  with the same check function the real test uses, that parity then fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

SPREAD_FACTOR = 100.0  # the reference's outputs must span this many tolerances across the test inputs
TARGET_LOGIT_STD = 2.0  # std of the final logits (or margin) across crops: p(fake) then spans most of (0, 1)
BN_GAMMA = (0.5, 1.5)  # random affine BN parameters, so an export that drops gamma or beta changes the scores
BN_BETA = (-0.2, 0.2)
CHANNEL_AXIS = -3  # of NCHW / NTCHW network inputs


def randomise_bn_affine(module: nn.Module, seed: int) -> nn.Module:
    """Random gamma and beta on every BatchNorm (torch starts them at 1 and 0, which hides a dropped tensor)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.copy_(torch.empty(m.num_features).uniform_(*BN_GAMMA, generator=g))
                m.bias.copy_(torch.empty(m.num_features).uniform_(*BN_BETA, generator=g))
    return module


@torch.no_grad()
def fit_bn_stats(module: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running mean and variance to the statistics of the batch `x` (real face crops,
    normalised as the engine does), each layer seeing the already-refitted layers before it.

    Only the BN layers switch to train mode (momentum None: the running stats become this one batch's exact
    statistics), so dropout and everything else stay as at inference. Returns `module` in eval mode.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns, f"{type(module).__name__} has no BatchNorm to fit"
    module.eval()
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        module(x)
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
            m.eval()
    return module


def _contrast(out: torch.Tensor) -> torch.Tensor:
    """What decides p(fake): the single logit, or for two classes the margin between them."""
    return out[:, 0] if out.shape[1] == 1 else out[:, 0] - out[:, 1]


@torch.no_grad()
def spread_linear(linear: nn.Linear, features: torch.Tensor, target_std: float = TARGET_LOGIT_STD) -> nn.Linear:
    """Scale `linear`'s weight so its logit (one output) or two-class margin has std `target_std` over
    `features`, and set its bias so every output's mean over them is 0: p(fake) then spreads around 0.5."""
    assert linear.out_features in (1, 2), "spread_linear handles one logit or a two-class margin"
    raw = features @ linear.weight.T
    std = float(_contrast(raw).std())
    assert std > 0, "the features do not vary across inputs at all"
    linear.weight.mul_(target_std / std)
    linear.bias.copy_(-(features @ linear.weight.T).mean(0))
    return linear


def assert_spread(outputs: np.ndarray, tol: float, factor: float = SPREAD_FACTOR, what: str = "reference") -> float:
    """The reference's outputs must span at least `factor` x `tol` across the inputs; returns the spread.

    A parity test whose reference maps every input to nearly the same output passes whatever the backend is fed.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    assert len(outputs) > 1, f"{what}: need more than one input to measure a spread"
    spread = float(np.ptp(outputs))
    assert spread >= factor * tol, (
        f"{what}: outputs span only {spread:.3g} across {len(outputs)} inputs, under {factor:g} x the parity "
        f"tolerance {tol:g}; a parity check at that tolerance cannot tell the inputs apart"
    )
    return spread


PARITY_FAILURE = "parity"  # in every parity failure message, so bug tests can match it (not a spread failure)


def assert_close(expected: np.ndarray, got: np.ndarray, tol: float, what: str = "backend") -> float:
    """max |got - expected| <= tol; returns the max difference."""
    expected, got = np.asarray(expected, np.float64), np.asarray(got, np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} vs the reference's {expected.shape}"
    worst = float(np.abs(got - expected).max())
    assert worst <= tol, f"{what}: {PARITY_FAILURE} broken, max |diff| {worst:.3g} > {tol:g}"
    return worst


def swap_channels(x: np.ndarray) -> np.ndarray:
    """RGB <-> BGR on a normalised NCHW / NTCHW network input."""
    return np.ascontiguousarray(np.flip(x, axis=CHANNEL_AXIS))


def blank(x: np.ndarray) -> np.ndarray:
    """The network input replaced by zeros."""
    return np.zeros_like(x)


def swap_crop_channels(crops: np.ndarray) -> np.ndarray:
    """RGB <-> BGR on uint8 NHWC / NTHWC crops, for the side of a comparison that reads crops itself."""
    return np.ascontiguousarray(crops[..., ::-1])


INPUT_BUGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"swap_channels": swap_channels, "blank": blank}


class SessionInputBug:
    """An ONNX Runtime session whose every input passes through `bug` first: the fault a parity test must see.

    It wraps the real session (every other attribute is the session's own), so the engine around it runs exactly
    as in production except for what its network is fed.
    """

    def __init__(self, session: Any, bug: Callable[[np.ndarray], np.ndarray]) -> None:
        self._session, self._bug = session, bug

    def run(self, output_names: Any, feed: Mapping[str, np.ndarray], *args: Any, **kwargs: Any) -> Any:
        return self._session.run(output_names, {k: self._bug(v) for k, v in feed.items()}, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def inject(monkeypatch: Any, engine: Any, bug: Callable[[np.ndarray], np.ndarray]) -> Any:
    """`engine` (an OnnxEngine) feeds its session `bug(input)` until the test ends; returns the engine."""
    monkeypatch.setattr(engine, "session", SessionInputBug(engine.session, bug))
    return engine
