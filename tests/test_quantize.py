"""ONNX Runtime int8: static quantisation calibrated on real face crops runs, keeps the dynamic batch, follows fp32.

The crops fixture gives 21 real MTCNN crops, 3 per shared FF++ video. Every third one (one per video) calibrates
and the other 14 are held out, so agreement is measured on crops the calibrator never saw.

Where agreement can be judged, and where it cannot:
- MesoNet has real published weights, so its decisions are meaningful: those are the decision-agreement checks.
  Measured here (AVX2, ORT 1.32) on the 14 held-out crops: meso4-df agrees on 14/14 decisions, max |p_fake diff|
  0.044, mean 0.019; mesoinception-df 14/14, max 0.23, mean 0.035. The bounds below (>= 90% of decisions, mean
  <= 0.06) leave room for other CPUs' int8 kernels, and are tight enough that a broken calibration (wrong
  normalisation, say) fails them: MesoNet's p_fake spans 0-1 on these crops.
- Xception has no offline weights, and a random Xception says nothing about decisions. With the random BN
  statistics of test_xception_140k.py its activations shrink layer by layer and the output is almost independent
  of the input (the logit margin varies by ~1e-6 across crops); with BN statistics fitted to real crops it is
  chaotic instead (fp32 alone flips decisions when input pixels move by +-1). So the Xception check is that the
  int8 graph computes the same function: the logits minus the fc bias (the part the quantised convolutions
  produce) match fp32 at >= 40 dB signal-to-quantisation-noise (measured 59 dB), p_fake within 1e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from engines.base import TorchEngine
from engines.onnx_backend import BATCH_AXIS_NAME, INPUT_NAME, OnnxEngine, onnx_engine_for
from engines.quantize import agreement, quantize_engine
from engines.registry import build_engine
from engines.xception_140k import Xception140k

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "shared" / "weights" / "mesonet"
MESO_SIZE = 256
XCEPTION_SIZE = 299
CALIBRATION_STRIDE = 3  # every third crop calibrates: one per video
MIN_DECISION_AGREEMENT = 0.9
MAX_MEAN_ABS_DIFF = 0.06
XCEPTION_MIN_SQNR_DB = 40.0
XCEPTION_MAX_ABS_DIFF = 1e-3
BATCH_TOL = 1e-5  # p_fake of a crop alone vs inside a batch (int8 kernels may block the batch differently)


def _split(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    held_out = np.ones(len(crops), dtype=bool)
    held_out[::CALIBRATION_STRIDE] = False
    return crops[::CALIBRATION_STRIDE], crops[held_out]


def _quantised_ops(engine: OnnxEngine) -> dict[str, int]:
    model = onnx.load(str(engine.path))
    ops = [n.op_type for n in model.graph.node]
    int8_weights = sum(
        1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4
    )
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear"),
            "int8_conv_weights": int8_weights}


def _assert_int8_graph(engine: OnnxEngine) -> None:
    counts = _quantised_ops(engine)
    assert counts["QuantizeLinear"] > 0 and counts["int8_conv_weights"] > 0, counts


def _assert_dynamic_batch(engine: OnnxEngine, crops: np.ndarray) -> None:
    assert engine.session.get_inputs()[0].shape[0] == BATCH_AXIS_NAME
    alone = np.concatenate([engine.predict(crops[i : i + 1]) for i in range(3)])
    together = engine.predict(crops[:3])
    assert together.shape == (3,) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=BATCH_TOL)


def _meso(name: str) -> TorchEngine:
    return build_engine(name, weights_dir=WEIGHTS_DIR, allow_download=False)


@pytest.mark.parametrize("name", ["meso4-df", "mesoinception-df"])
def test_mesonet_int8_agrees_with_fp32(name: str, ffpp_face_crops, tmp_path: Path) -> None:
    calibration, held_out = _split(ffpp_face_crops(MESO_SIZE))
    engine = _meso(name)
    int8 = quantize_engine(engine, calibration, tmp_path)
    fp32 = onnx_engine_for(engine, tmp_path)
    _assert_int8_graph(int8)
    _assert_dynamic_batch(int8, held_out)
    result = agreement(fp32, int8, held_out)
    print(f"{name}: int8 vs ORT fp32 on {result['n']} held-out crops: {result}")
    assert result["n"] == len(held_out)
    assert result["decision_agreement"] >= MIN_DECISION_AGREEMENT, result
    assert result["mean_abs_diff"] <= MAX_MEAN_ABS_DIFF, result


def test_cache_reuses_quantised_model(ffpp_face_crops, tmp_path: Path) -> None:
    calibration, _ = _split(ffpp_face_crops(MESO_SIZE))
    engine = _meso("meso4-df")
    first = quantize_engine(engine, calibration, tmp_path)
    mtime = first.path.stat().st_mtime_ns
    second = quantize_engine(engine, calibration, tmp_path)
    assert second.path == first.path and second.path.stat().st_mtime_ns == mtime
    assert "-int8-" in first.path.name and first.path.name.startswith("meso4-df-")
    fp32_path = onnx_engine_for(engine, tmp_path).path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.path.name, fp32_path.name])  # no partials
    # Same weights, other calibration crops: another file. Other weights, same crops: another file.
    assert quantize_engine(engine, calibration[:-1], tmp_path).path != first.path
    assert quantize_engine(_meso("meso4-f2f"), calibration, tmp_path).path != first.path


def test_refuses_bad_calibration_crops(tmp_path: Path) -> None:
    engine = _meso("meso4-df")
    with pytest.raises(ValueError, match="expected uint8 batch"):
        quantize_engine(engine, np.zeros((2, 64, 64, 3), dtype=np.uint8), tmp_path)
    with pytest.raises(ValueError, match="at least one crop"):
        quantize_engine(engine, np.zeros((0, MESO_SIZE, MESO_SIZE, 3), dtype=np.uint8), tmp_path)


@pytest.mark.slow
def test_xception_int8(ffpp_face_crops, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Xception140k()
    for m in model.modules():  # as in test_xception_140k.py
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    weights = tmp_path / "best_xception.pth"
    torch.save(model.state_dict(), weights)
    engine = build_engine("xception-140k", weights_file=weights)
    calibration, held_out = _split(ffpp_face_crops(XCEPTION_SIZE))
    held_out = held_out[:6]  # a 299^2 pass costs ~0.1-0.5 s per crop per backend on 2 shared cores

    int8 = quantize_engine(engine, calibration, tmp_path / "cache")
    fp32 = onnx_engine_for(engine, tmp_path / "cache")
    _assert_int8_graph(int8)
    _assert_dynamic_batch(int8, held_out)

    x = {INPUT_NAME: engine.preprocess(held_out).numpy()}
    bias = model.fc.bias.detach().numpy()
    ref = fp32.session.run(None, x)[0] - bias
    got = int8.session.run(None, x)[0] - bias
    sqnr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((got - ref).astype(np.float64) ** 2))
    result = agreement(fp32, int8, held_out)
    print(f"xception-140k (random weights): logits-minus-bias SQNR {sqnr:.1f} dB; {result}")
    assert sqnr >= XCEPTION_MIN_SQNR_DB
    assert result["max_abs_diff"] <= XCEPTION_MAX_ABS_DIFF, result
