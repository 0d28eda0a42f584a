"""ONNX Runtime parity for the remaining seed engines (cards 000, 001, 002): the same network, exported, must give
the same p(fake) as torch on real face crops. Weights are random: export and runtime do not depend on values."""

import numpy as np
import pytest
import torch

from engines.base import TorchEngine
from engines.onnx_backend import onnx_engine_for
from engines.registry import get_entry
from engines.xception_logreg import LogRegHead, XceptionLogReg
from engines.xception_lstm import XceptionLSTM

ORT_TOL = 1e-4
SIZE = 96  # small frames keep the Xception exports fast; the graph is the same at 299
pytestmark = pytest.mark.slow


def randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random BN statistics too, so the exported graph's normalisation is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module.eval()


def compare(engine: TorchEngine, items: np.ndarray, tmp_path) -> float:
    ort = onnx_engine_for(engine, tmp_path)
    diffs = [np.abs(ort.predict(items[i:i + n]) - engine.predict(items[i:i + n])).max()
             for i, n in ((0, 1), (0, len(items)))]
    return float(max(diffs))


def test_xception_logreg_ort_matches_torch(ffpp_face_crops, tmp_path):
    rng = np.random.default_rng(0)
    head = LogRegHead(mean=rng.normal(size=2048) * 0.01, scale=rng.uniform(0.5, 1.5, 2048),
                      coef=rng.normal(size=2048) * 0.05, intercept=0.1, classes=np.array([0, 1]), fake_index=1)
    entry = get_entry("xception-logreg")
    spec = entry.input.model_copy(update={"size": SIZE})
    engine = TorchEngine("xception-logreg", randomised(XceptionLogReg(head), 0), spec, entry.labels)
    assert compare(engine, ffpp_face_crops(SIZE)[:4], tmp_path) <= ORT_TOL


def test_xception_lstm_ort_matches_torch(ffpp_face_crops, tmp_path):
    torch.manual_seed(1)
    entry = get_entry("xception-lstm")
    spec = entry.input.model_copy(update={"size": SIZE, "frames": 3})
    engine = TorchEngine("xception-lstm", randomised(XceptionLSTM(), 1), spec, entry.labels)
    clips = ffpp_face_crops(SIZE)[:6].reshape(2, 3, SIZE, SIZE, 3)
    assert compare(engine, clips, tmp_path) <= ORT_TOL


def test_videomae_ort_matches_torch(ffpp_face_crops, tmp_path):
    from engines.registry import build_engine
    from test_videomae import make_checkpoint

    make_checkpoint(tmp_path / "ckpt", 32, 4)
    engine = build_engine("videomae", weights_file=tmp_path / "ckpt")
    clips = ffpp_face_crops(32)[:8].reshape(2, 4, 32, 32, 3)
    assert compare(engine, clips, tmp_path / "onnx") <= ORT_TOL
