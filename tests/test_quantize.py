"""ONNX Runtime int8: static quantisation calibrated on real face crops runs, keeps the dynamic batch, follows fp32.

The crops fixture gives 21 real MTCNN crops, 3 per shared FF++ video. Every third one (one per video) calibrates
and the other 14 are held out, so agreement is measured on crops the calibrator never saw.

Where agreement can be judged, and where it cannot:
- MesoNet has real published weights, so its decisions are meaningful: those are the decision-agreement checks.
  Measured here (AVX2, ORT 1.32) on the 14 held-out crops: meso4-df agrees on 14/14 decisions, max |p_fake diff|
  0.044, mean 0.019; mesoinception-df 14/14, max 0.23, mean 0.035. The bounds below (>= 90% of decisions, mean
  <= 0.06) leave room for other CPUs' int8 kernels, and are tight enough that a broken calibration (wrong
  normalisation, say) fails them: MesoNet's p_fake spans 0-1 on these crops.
- Xception has no offline weights, and a random Xception says nothing about decisions. With made-up BN
  statistics its output is almost independent of the input (p(fake) varied by ~1e-6 across crops, noise and
  zeros), so a signal-to-noise ratio computed on it measures a constant. With BN statistics fitted to real crops
  alone it is chaotic (a +-1 pixel change moved p(fake) by 0.8; int8 agreed with fp32 at 5 dB). The engine
  here is the one of tests/support/sensitive.py: fitted BN statistics, damped residual branches and a head along the
  features' main direction, so p(fake) spreads over most of (0, 1) and follows the input smoothly. The check is
  that int8 computes the same function as the torch fp32 engine: the input-dependent part of the fp32 logit
  margin (its deviation from its mean over the crops) against the int8 error, >= 10 dB (measured 16.1 dB), and p_fake within 0.15
  (measured 0.066; fp32 p_fake spans 0.73). Fed channel-swapped input int8 measures -1.7 dB and 0.52, blank
  input -8.0 dB and 0.96: test_int8_sees_wrong_input.
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
from support.sensitive import INPUT_BUGS, PARITY_FAILURE, assert_spread, inject, sensitive_xception

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "shared" / "weights" / "mesonet"
MESO_SIZE = 256
XCEPTION_SIZE = 299
CALIBRATION_STRIDE = 3  # every third crop calibrates: one per video
MIN_DECISION_AGREEMENT = 0.9
MAX_MEAN_ABS_DIFF = 0.06
XCEPTION_MIN_SQNR_DB = 10.0
XCEPTION_MAX_ABS_DIFF = 0.15
XCEPTION_SPREAD_FACTOR = 4.0  # fp32 p_fake must span 4 x the allowed int8 difference (0.6) over the held-out crops
XCEPTION_HELD_OUT = 6  # a 299^2 pass costs ~0.1-0.5 s per crop per backend on 2 shared cores
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


@pytest.fixture(scope="module")
def xception_int8(ffpp_face_crops, tmp_path_factory) -> tuple[TorchEngine, OnnxEngine, np.ndarray]:
    """The input-sensitive random Xception (BN fitted on the calibration crops), its int8 ORT twin, and held-out
    crops: one per video, none of them seen by calibration or the BN fit."""
    calibration, held_out = _split(ffpp_face_crops(XCEPTION_SIZE))
    folder = tmp_path_factory.mktemp("xception-int8")
    engine = sensitive_xception(calibration, folder)
    int8 = quantize_engine(engine, calibration, folder / "cache")
    return engine, int8, held_out[:: CALIBRATION_STRIDE - 1][:XCEPTION_HELD_OUT]


def _margin(logits: np.ndarray) -> np.ndarray:
    """The fake-minus-real logit margin: what decides p(fake) (index 0 is fake in xception-140k)."""
    logits = np.asarray(logits, np.float64)
    return logits[:, 0] - logits[:, 1]


def check_int8_xception(engine: TorchEngine, int8: OnnxEngine, crops: np.ndarray) -> dict:
    """The int8 check the real test and the bug tests share: the torch fp32 engine (the reference every backend
    answers to, so a fault shared by all ORT sessions shows too) must spread, int8 must follow its variation."""
    result = agreement(engine, int8, crops)
    p32 = engine.predict(crops)
    assert_spread(p32, XCEPTION_MAX_ABS_DIFF, XCEPTION_SPREAD_FACTOR, "xception-140k torch fp32")
    x = engine.preprocess(crops)
    with torch.inference_mode():
        ref = _margin(engine.module(x).numpy())
    got = _margin(int8.session.run(None, {INPUT_NAME: x.numpy()})[0])
    signal = ref - ref.mean()
    sqnr = 10 * np.log10(np.sum(signal**2) / np.sum((got - ref) ** 2))
    result["sqnr_db"] = float(sqnr)
    print(f"xception-140k (sensitive random weights): int8 margin SQNR {sqnr:.1f} dB, fp32 spread "
          f"{np.ptp(p32):.3f}; {result}")
    assert sqnr >= XCEPTION_MIN_SQNR_DB, f"int8 {PARITY_FAILURE} broken: margin SQNR {sqnr:.1f} dB"
    assert result["max_abs_diff"] <= XCEPTION_MAX_ABS_DIFF, f"int8 {PARITY_FAILURE} broken: {result}"
    return result


@pytest.mark.slow
def test_xception_int8(xception_int8) -> None:
    engine, int8, held_out = xception_int8
    _assert_int8_graph(int8)
    _assert_dynamic_batch(int8, held_out)
    check_int8_xception(engine, int8, held_out)


@pytest.mark.slow
@pytest.mark.parametrize("bug", list(INPUT_BUGS))
def test_int8_sees_wrong_input(bug: str, xception_int8, monkeypatch) -> None:
    """int8 fed channel-swapped or blank input: the very check test_xception_int8 runs must fail."""
    engine, int8, held_out = xception_int8
    inject(monkeypatch, int8, INPUT_BUGS[bug])
    with pytest.raises(AssertionError, match=PARITY_FAILURE):
        check_int8_xception(engine, int8, held_out)
