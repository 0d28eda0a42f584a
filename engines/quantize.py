"""ONNX Runtime int8 backend: static quantisation of an engine's exported fp32 graph, calibrated on face crops.

The fp32 graph comes from `engines.onnx_backend` (same export, same cache folder). Calibration feeds it real face
crops normalised by `engines.base.normalise`, the exact function every backend uses at inference time, so the
activation ranges ORT records are the ones the engine will see. The settings, chosen for ORT's x86 CPU kernels:

- QDQ format (ORT's recommended format for CPU; it fuses QuantizeLinear/DequantizeLinear pairs around Conv,
  MatMul... into QLinearConv / integer kernels when it builds the session).
- Activations QUInt8 (asymmetric), weights QInt8 per output channel: the U8S8 combination ORT's docs recommend
  for CPU and the one MLAS has its fastest x86 kernels for. Measured here on Xception at 299^2 (AVX2, 2 threads):
  U8S8 ran ~1.7-2.2x faster than fp32, S8S8 only ~1.2x, because S8 activations take a slower path.
- reduce_range=True (7-bit weights): on AVX2/AVX-512 machines without VNNI the U8S8 kernel sums pairs of
  u8*s8 products in int16 (vpmaddubsw) and can saturate; ORT's docs recommend reduce_range there. It costs no
  speed (measured) and cut the int8-vs-fp32 logit error ~7x on Xception here. The cached file may be run on any
  x86 machine, so the portable choice is kept rather than switched on the building machine's CPU flags.
- MinMax calibration: with the small calibration sets used here (8-16 crops) it is the fastest method and the
  measured agreement with fp32 (see tests/test_quantize.py) needs nothing finer.

`quant_pre_process` (symbolic shape inference + ORT's graph optimisations) runs first, as ORT's quantisation guide
recommends: it gives the quantiser complete shapes and already-fused Conv+BN nodes to work on.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from engines.base import Engine, InputSpec, TorchEngine, channel_stats, normalise
from engines.onnx_backend import (
    DEFAULT_OPSET,
    DEFAULT_PROVIDERS,
    INPUT_NAME,
    WEIGHTS_DIGEST_CHARS,
    OnnxEngine,
    onnx_engine_for,
    weights_digest,
)

CALIBRATION_BATCH = 4  # crops per calibration batch: bounds the memory of the augmented (all-outputs) graph
CALIBRATION_DIGEST_CHARS = 16
DECISION_THRESHOLD = 0.5
AGREEMENT_BATCH = 8
# Everything that changes the int8 file besides the weights and the calibration crops. It is hashed into the
# cache name with the crops, so changing a setting here never reuses a file quantised with the old one.
QUANT_SETTINGS = {
    "format": "QDQ",
    "activations": "QUInt8",
    "weights": "QInt8",
    "per_channel": True,
    "reduce_range": True,
    "calibration": "MinMax",
    "pre_process": True,
}


class CropCalibrationReader(CalibrationDataReader):
    """Feeds ORT's calibrator batches of uint8 crops normalised exactly as the engines do at inference time."""

    def __init__(self, crops: np.ndarray, spec: InputSpec, batch: int = CALIBRATION_BATCH) -> None:
        if len(crops) == 0:
            raise ValueError("calibration needs at least one crop")
        self.crops, self.batch = crops, batch
        self._mean, self._std = channel_stats(spec)
        self._batches = self._iterate()

    def _iterate(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.crops), self.batch):
            yield {INPUT_NAME: normalise(self.crops[start : start + self.batch], self._mean, self._std).numpy()}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = self._iterate()


def calibration_digest(crops: np.ndarray) -> str:
    """sha256 over the calibration crops (dtype, shape, bytes) and QUANT_SETTINGS."""
    h = hashlib.sha256()
    h.update(json.dumps(QUANT_SETTINGS, sort_keys=True).encode())
    h.update(f"{crops.dtype}:{tuple(crops.shape)};".encode())
    h.update(np.ascontiguousarray(crops).tobytes())
    return h.hexdigest()


def quantize_onnx(fp32_path: Path, out_path: Path, calibration_crops: np.ndarray, spec: InputSpec) -> Path:
    """Static int8 QDQ quantisation of `fp32_path` into `out_path` with the settings in QUANT_SETTINGS."""
    with tempfile.TemporaryDirectory(prefix="dfstream-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(out_path),
            CropCalibrationReader(calibration_crops, spec),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return out_path


def quantize_engine(
    engine: TorchEngine,
    calibration_crops: np.ndarray,
    cache_dir: Path,
    opset: int = DEFAULT_OPSET,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    intra_op_threads: int | None = None,
) -> OnnxEngine:
    """The int8 ORT twin of `engine`, quantised once into `cache_dir` and reused.

    The file is NAME-WEIGHTSDIGEST-opsetN-int8-CALIBDIGEST.onnx: the weights digest is onnx_backend's, the
    calibration digest covers the crops and the quantisation settings. The fp32 export it starts from is
    onnx_backend's cached one in the same folder. Quantisation writes to a temporary name renamed into place,
    so an interrupted run never leaves a file later runs would take for a finished model.
    """
    engine.check_batch(calibration_crops)
    if len(calibration_crops) == 0:
        raise ValueError(f"{engine.name}: calibration needs at least one crop")
    cache_dir = Path(cache_dir)
    digest = weights_digest(engine.module)[:WEIGHTS_DIGEST_CHARS]
    calib = calibration_digest(calibration_crops)[:CALIBRATION_DIGEST_CHARS]
    path = cache_dir / f"{engine.name}-{digest}-opset{opset}-int8-{calib}.onnx"
    if not path.exists():
        fp32 = onnx_engine_for(engine, cache_dir, opset, providers, intra_op_threads=1)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            os.replace(quantize_onnx(fp32.path, partial, calibration_crops, engine.spec), path)
        finally:
            partial.unlink(missing_ok=True)
    return OnnxEngine(engine.name, path, engine.spec, engine.labels, providers, intra_op_threads)


def agreement(
    fp32: Engine, int8: Engine, crops: np.ndarray, threshold: float = DECISION_THRESHOLD, batch: int = AGREEMENT_BATCH
) -> dict[str, float]:
    """How closely `int8` follows `fp32` on `crops`: |p_fake diff| (max, mean) and identical decisions at `threshold`.

    Returns {"n", "max_abs_diff", "mean_abs_diff", "decision_agreement"}; decisions are p_fake >= threshold.
    """
    if len(crops) == 0:
        raise ValueError("agreement needs at least one crop")
    chunks = [crops[i : i + batch] for i in range(0, len(crops), batch)]
    a = np.concatenate([fp32.predict(c) for c in chunks])
    b = np.concatenate([int8.predict(c) for c in chunks])
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {
        "n": len(crops),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "decision_agreement": float(np.mean((a >= threshold) == (b >= threshold))),
    }
