"""ONNX Runtime parity for the remaining seed engines (cards 000, 001, 002): the same network, exported, must give
the same p(fake) as torch on real face crops.

Weights are random, made input-sensitive (tests/support/sensitive.py): BN statistics of the test crops, damped residual
branches, and a head along the features' main direction, so p(fake) spreads across crops. `compare` first asserts
that spread, and the bug tests prove that the same `compare` fails when ORT is fed channel-swapped or blank input.
"""

import numpy as np
import pytest
import torch

from engines.base import TorchEngine, channel_stats, normalise
from engines.onnx_backend import OnnxEngine, onnx_engine_for
from engines.registry import get_entry
from engines.architectures.xception_logreg import LogRegHead, XceptionLogReg
from engines.architectures.xception_lstm import XceptionLSTM
from support.sensitive import (INPUT_BUGS, PARITY_FAILURE, assert_close, assert_spread, inject, inputs_of, sensitise,
                       spread_linear)

ORT_TOL = 1e-4
SIZE = 96  # small frames keep the Xception exports fast; the graph is the same at 299
CROPS_PER_VIDEO = 3  # of the conftest fixture, consecutive: a video's crops form one clip
TIME_STEPS = CROPS_PER_VIDEO
FEATURES = 2048
SCALE_FLOOR = 1e-6  # keeps the head's standardisation finite for a feature that never varies
pytestmark = pytest.mark.slow


def compare(engine: TorchEngine, ort: OnnxEngine, items: np.ndarray) -> float:
    """max |p_fake(ORT) - p_fake(torch)| at batch 1 and the whole batch, after asserting that torch's p_fake
    spreads across the items far beyond ORT_TOL. The parity tests and the bug tests run this same check."""
    expected = engine.predict(items)
    spread = assert_spread(expected, ORT_TOL, what=f"{engine.name} torch reference")
    worst = assert_close(expected[:1], ort.predict(items[:1]), ORT_TOL, f"{engine.name} ORT vs torch (batch 1)")
    worst = max(worst, assert_close(expected, ort.predict(items), ORT_TOL, f"{engine.name} ORT vs torch"))
    print(f"{engine.name}: ORT vs torch max |p_fake diff| {worst:.2e} over {len(items)} items, spread {spread:.3f}")
    return worst


def _logreg(crops: np.ndarray) -> TorchEngine:
    """Card 000's network: sensitive random Keras Xception, and a head standardised on its features."""
    entry = get_entry("xception-logreg")
    spec = entry.input.model_copy(update={"size": SIZE})
    placeholder = LogRegHead(mean=np.zeros(FEATURES), scale=np.ones(FEATURES), coef=np.zeros(FEATURES),
                             intercept=0.0, classes=np.array([0, 1]), fake_index=1)
    model = XceptionLogReg(placeholder)
    x = normalise(crops, *channel_stats(spec))
    sensitise(model, x, seed=0)
    with torch.no_grad():
        features = model.backbone(x)
        model.head.mean.copy_(features.mean(0))
        model.head.scale.copy_(features.std(0).clamp_min(SCALE_FLOOR))
    spread_linear(model.head.linear, inputs_of(model.head.linear, model, x))
    return TorchEngine("xception-logreg", model, spec, entry.labels)


def _lstm(clips: np.ndarray) -> TorchEngine:
    """Card 002's network: sensitive random Keras Xception per frame, LSTM, and a Dense spread over its states."""
    torch.manual_seed(1)
    entry = get_entry("xception-lstm")
    spec = entry.input.model_copy(update={"size": SIZE, "frames": TIME_STEPS})
    model = XceptionLSTM()
    x = normalise(clips, *channel_stats(spec))
    sensitise(model, x, seed=1)
    spread_linear(model.dense, inputs_of(model.dense, model, x))
    return TorchEngine("xception-lstm", model, spec, entry.labels)


@pytest.fixture(scope="module")
def seed_engines(ffpp_face_crops, tmp_path_factory) -> dict[str, tuple[TorchEngine, OnnxEngine, np.ndarray]]:
    """name -> (torch engine, its ORT twin, the items they are compared on)."""
    crops = ffpp_face_crops(SIZE)
    clips = crops[: len(crops) // TIME_STEPS * TIME_STEPS].reshape(-1, TIME_STEPS, SIZE, SIZE, 3)
    frames = crops[::CROPS_PER_VIDEO]  # one per video
    cache = tmp_path_factory.mktemp("seed-onnx")
    out = {}
    for engine, items in ((_logreg(frames), frames), (_lstm(clips), clips)):
        out[engine.name] = (engine, onnx_engine_for(engine, cache), items)
    return out


def test_xception_logreg_ort_matches_torch(seed_engines):
    assert compare(*seed_engines["xception-logreg"]) <= ORT_TOL


def test_xception_lstm_ort_matches_torch(seed_engines):
    assert compare(*seed_engines["xception-lstm"]) <= ORT_TOL


@pytest.mark.parametrize("bug", list(INPUT_BUGS))
@pytest.mark.parametrize("name", ["xception-logreg", "xception-lstm"])
def test_parity_sees_wrong_input(name: str, bug: str, seed_engines, monkeypatch):
    """ORT fed channel-swapped or blank input: the very `compare` the parity tests run must fail."""
    engine, ort, items = seed_engines[name]
    inject(monkeypatch, ort, INPUT_BUGS[bug])
    with pytest.raises(AssertionError, match=PARITY_FAILURE):
        compare(engine, ort, items)


def test_videomae_ort_matches_torch(ffpp_face_crops, tmp_path):
    from engines.registry import build_engine
    from test_videomae import make_checkpoint

    make_checkpoint(tmp_path / "ckpt", 32, 4)
    engine = build_engine("videomae", weights_file=tmp_path / "ckpt")
    clips = ffpp_face_crops(32)[:8].reshape(2, 4, 32, 32, 3)
    assert compare(engine, onnx_engine_for(engine, tmp_path / "onnx"), clips) <= ORT_TOL
