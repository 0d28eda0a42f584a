"""Choosing and preparing the backend an engine runs on: torch (CPU/CUDA), ONNX Runtime, TensorRT.

Every engine is first built in torch from its published weights; other backends are derived from it (ONNX
export, int8 quantisation, TensorRT build) and cached under `$DFSTREAM_CACHE` (default ~/.cache/dfstream/engines).
`auto` picks the fastest that can run here: TensorRT, then CUDA torch, then ONNX Runtime on the CPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from engines.base import Engine, TorchEngine

from engines.choices import BACKENDS, PRECISIONS
CACHE_ENV = "DFSTREAM_CACHE"

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """The requested backend or precision cannot run here; the message says why."""


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dfstream" / "engines"


def unavailable_reasons() -> dict[str, str | None]:
    """Each concrete backend -> None if it can run here, else the reason it cannot."""
    from engines.tensorrt_backend import unavailable_reason

    try:
        import onnxruntime  # noqa: F401
        onnx_reason = None
    except ImportError as exc:
        onnx_reason = f"onnxruntime is not installed ({exc})"
    return {
        "torch": None,
        "cuda": None if torch.cuda.is_available() else "no CUDA device",
        "onnx": onnx_reason,
        "tensorrt": unavailable_reason(),
    }


def available_backends() -> list[str]:
    return [name for name, reason in unavailable_reasons().items() if reason is None]


def choose(requested: str) -> str:
    """Resolve `auto` to a concrete backend, or check that the requested one can run."""
    reasons = unavailable_reasons()
    if requested == "auto":
        if reasons["tensorrt"] is None:
            return "tensorrt"
        if reasons["cuda"] is None:
            return "torch"
        return "onnx" if reasons["onnx"] is None else "torch"
    if requested not in reasons:
        raise BackendUnavailable(f"unknown backend {requested!r}; choose from {', '.join(BACKENDS)}")
    if reasons[requested] is not None:
        raise BackendUnavailable(f"backend {requested} is unavailable here: {reasons[requested]}")
    return requested


def prepare(
    engine: Engine,
    backend: str = "auto",
    precision: str = "fp32",
    calibration: np.ndarray | None = None,
    cache_dir: Path | None = None,
) -> Engine:
    """Return `engine` running on `backend` at `precision`; `auto` falls back to torch if a conversion fails."""
    if not isinstance(engine, TorchEngine):
        return engine
    if precision not in PRECISIONS:
        raise BackendUnavailable(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    concrete = choose(backend)
    try:
        converted = _convert(engine, concrete, precision, calibration, cache)
    except BackendUnavailable:
        raise
    except Exception as exc:
        if backend != "auto":
            raise
        log.warning("%s: %s backend failed (%s); running on torch instead", engine.name, concrete, exc)
        return engine
    return converted.adopt(engine)


def _convert(engine: TorchEngine, backend: str, precision: str, calibration: np.ndarray | None,
             cache: Path) -> Engine:
    if backend == "torch":
        if precision == "int8":
            raise BackendUnavailable("int8 runs on the onnx or tensorrt backend, not torch")
        return engine.to_half() if precision == "fp16" else engine
    if backend == "onnx":
        if precision == "fp16":
            raise BackendUnavailable("ONNX Runtime on the CPU has no fast fp16; use fp32 or int8")
        if precision == "int8":
            return _int8(engine, calibration, cache)
        from engines.onnx_backend import onnx_engine_for

        return onnx_engine_for(engine, cache)
    if backend == "tensorrt":
        from engines.onnx_backend import onnx_engine_for
        from engines.tensorrt_backend import BatchProfile, TensorRTEngine, cached_engine_path

        source = _int8(engine, calibration, cache) if precision == "int8" else onnx_engine_for(engine, cache)
        profile = BatchProfile()
        path = cached_engine_path(engine.name, source.path, engine.spec, precision, profile, cache)
        return TensorRTEngine(engine.name, path, engine.spec, engine.labels, profile)
    raise BackendUnavailable(f"unknown backend {backend!r}")


def _int8(engine: TorchEngine, calibration: np.ndarray | None, cache: Path):
    if calibration is None or len(calibration) == 0:
        raise BackendUnavailable(f"{engine.name}: int8 needs calibration face crops (--calibrate VIDEO_OR_DIR)")
    from engines.quantize import quantize_engine

    return quantize_engine(engine, calibration, cache)
