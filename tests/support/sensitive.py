"""Random-weight reference networks that can tell their inputs apart, and the checks that prove a parity test can.

Why: a deep random network with made-up BatchNorm statistics maps every input to nearly the same output. The
random Xception140k the parity tests used gave p(fake) 0.494596-0.494597 for face crops, noise, zeros and negated
inputs alike, so a 1e-4 parity check passed whatever the backend was fed (channels swapped, or all zeros). Here:
- `fit_bn_stats` sets every BatchNorm's running statistics to those of real face crops (one forward pass, BN layers
  in train mode, under no_grad), so each layer's activations are normalised the way trained weights would be;
- `damp_residual_branches` shrinks each residual branch against its shortcut first: a random deep residual
  network with fitted BN is otherwise chaotic (a +-1 pixel change moved a random Xception140k's p(fake) by 0.8,
  and int8 then agreed with fp32 at 5 dB), where a trained one is smooth;
- `spread_linear` points a final Linear along the features' main direction of variation across those crops and
  scales it so its logit (or the two-class margin) spreads;
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
RESIDUAL_DAMPING = 0.1  # gamma and beta of the BN closing each residual branch are scaled by this
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


def residual_branch_ends(module: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm that closes each residual branch (before its pooling) of the two torch Xceptions."""
    from engines import keras_xception
    from engines.architectures import xception_140k

    ends = []
    for m in module.modules():
        if isinstance(m, xception_140k.Block):
            ends.append([layer for layer in m.layers if isinstance(layer, nn.BatchNorm2d)][-1])
        elif isinstance(m, keras_xception.DownBlock):
            ends.append(m.sep2.bn)
        elif isinstance(m, keras_xception.MiddleBlock):
            ends.append(m.seps[-1].bn)
    return ends


@torch.no_grad()
def damp_residual_branches(module: nn.Module, factor: float = RESIDUAL_DAMPING) -> nn.Module:
    """Scale the closing BN's gamma and beta of every residual branch, so each block stays near its shortcut."""
    ends = residual_branch_ends(module)
    assert ends, f"{type(module).__name__} has no residual block this helper knows"
    for bn in ends:
        bn.weight.mul_(factor)
        bn.bias.mul_(factor)
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
def sensitise(module: nn.Module, x: torch.Tensor, seed: int) -> nn.Module:
    """Random BN gamma/beta, damped residual branches, then BN statistics fitted to `x`: the network's
    features now follow its input smoothly. Returns `module` in eval mode."""
    randomise_bn_affine(module, seed)
    damp_residual_branches(module)
    return fit_bn_stats(module, x)


def sensitive_model(module: nn.Module, head: nn.Linear | None, spec: Any, crops: np.ndarray, seed: int) -> nn.Module:
    """`sensitise` on `crops` (uint8, normalised by `spec` as the engines do), then `spread_linear` on `head`
    (default: the module's `fc`)."""
    from engines.base import channel_stats, normalise

    head = module.fc if head is None else head
    x = normalise(crops, *channel_stats(spec))
    sensitise(module, x, seed)
    spread_linear(head, inputs_of(head, module, x))
    return module.eval()


def sensitive_xception(crops: np.ndarray, folder: Any, seed: int = 0) -> Any:
    """The registry's xception-140k engine, built from a saved state dict of an input-sensitive random
    Xception140k (BN statistics of `crops`, head along their main direction of variation), so the whole load
    path is the product's."""
    from engines.registry import build_engine, get_entry
    from engines.architectures.xception_140k import Xception140k

    name = "xception-140k"
    torch.manual_seed(seed)
    model = Xception140k()
    sensitive_model(model, model.fc, get_entry(name).input, crops, seed)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "best_xception.pth"
    torch.save(model.state_dict(), weights)
    return build_engine(name, weights_file=weights)


@torch.no_grad()
def inputs_of(layer: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What `layer` receives when `module` runs on `x` (a forward pre-hook, removed afterwards)."""
    seen = []
    handle = layer.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    try:
        module.eval()(x)
    finally:
        handle.remove()
    assert len(seen) == 1, f"{type(layer).__name__} ran {len(seen)} times in one forward pass"
    return seen[0]


@torch.no_grad()
def spread_linear(linear: nn.Linear, features: torch.Tensor, target_std: float = TARGET_LOGIT_STD) -> nn.Linear:
    """Point `linear` along the first principal component of `features` (its inputs over the test crops): the
    one logit, or the two-class margin (rows +v/2 and -v/2). Then scale it so that logit or margin has std
    `target_std`, and set the bias so every output's mean is 0: p(fake) then spreads around 0.5.

    The main direction of variation carries the most input-dependent signal per unit of rounding or
    quantisation noise, which random directions in 2048 dimensions mostly average away."""
    assert linear.out_features in (1, 2), "spread_linear handles one logit or a two-class margin"
    centred = features.double() - features.double().mean(0)
    direction = torch.linalg.svd(centred, full_matrices=False).Vh[0].float()
    rows = [direction] if linear.out_features == 1 else [direction / 2, -direction / 2]
    linear.weight.copy_(torch.stack(rows))
    raw = features @ linear.weight.T
    std = float(_contrast(raw).std())
    assert std > 0, "the features do not vary across inputs at all"
    linear.weight.mul_(target_std / std)
    linear.bias.copy_(-(features @ linear.weight.T).mean(0))
    return linear


def assert_spread(outputs: np.ndarray, tol: float, factor: float = SPREAD_FACTOR, what: str = "reference") -> float:
    """The reference's outputs (N inputs, any output shape) must span at least `factor` x `tol` across the
    inputs, in their most varying element; returns that spread.

    A parity test whose reference maps every input to nearly the same output passes whatever the backend is fed.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    assert len(outputs) > 1, f"{what}: need more than one input to measure a spread"
    spread = float(np.ptp(outputs, axis=0).max())  # per output element across inputs, the widest
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
