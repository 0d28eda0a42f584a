"""The helpers of tests/support/sensitive.py do what the parity tests rely on: the spread check refuses the old,
input-blind random reference, and the recipe gives one whose output follows its input smoothly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.base import TorchEngine
from engines.registry import get_entry
from engines.architectures.xception_140k import Xception140k
from support.sensitive import assert_spread, sensitive_model

NAME = "xception-140k"
SIZE = 96  # Xception140k pools adaptively: small crops keep this fast, the effect is the same as at 299
TOL = 1e-4
CROPS_PER_VIDEO = 3
PIXEL_NOISE = 1  # +-1 grey level, far below anything that changes a face
MAX_NOISE_SHARE = 0.1  # of the spread across crops that +-1 pixel noise may move p(fake)


@pytest.fixture(scope="module")
def crops(ffpp_face_crops) -> np.ndarray:
    return ffpp_face_crops(SIZE)[::CROPS_PER_VIDEO]


def _engine(model: torch.nn.Module) -> TorchEngine:
    entry = get_entry(NAME)
    return TorchEngine(NAME, model, entry.input.model_copy(update={"size": SIZE}), entry.labels)


def test_spread_check_refuses_the_old_random_reference(crops: np.ndarray) -> None:
    """Random BN statistics (the recipe the parity tests used before) leave p(fake) constant: refused."""
    torch.manual_seed(0)
    model = Xception140k()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    with pytest.raises(AssertionError, match="cannot tell the inputs apart"):
        assert_spread(_engine(model).predict(crops), TOL)


def test_sensitive_reference_spreads_and_is_smooth(crops: np.ndarray) -> None:
    """After the recipe, p(fake) spreads across crops, and +-1 pixel noise moves it by a small share of that."""
    torch.manual_seed(0)
    entry = get_entry(NAME)
    spec = entry.input.model_copy(update={"size": SIZE})
    engine = _engine(sensitive_model(Xception140k(), None, spec, crops, seed=0))
    p = engine.predict(crops)
    spread = assert_spread(p, TOL)
    noise = np.random.default_rng(0).integers(-PIXEL_NOISE, PIXEL_NOISE + 1, crops.shape)
    noisy = np.clip(crops.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    moved = float(np.abs(engine.predict(noisy) - p).max())
    print(f"spread {spread:.3f}, +-1 pixel noise moves p(fake) by {moved:.4f}")
    assert moved <= MAX_NOISE_SHARE * spread
