"""TensorRT backend: build an engine from the exported ONNX, cache it, and run it on CUDA tensors.

A serialized TensorRT engine is only valid for the GPU model, TensorRT version, precision and batch profile it
was built for, so its cache file name carries all of them plus the ONNX model's sha256: any change rebuilds.
`tensorrt` is imported lazily; machines without it (or without CUDA) report the backend unavailable.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engines.base import Engine, InputSpec, LabelMapping, channel_stats, normalise
from engines.onnx_backend import INPUT_NAME, OUTPUT_NAME, item_shape

WORKSPACE_BYTES = 2 << 30  # scratch memory TensorRT may use while choosing kernels
SHA_CHARS = 16
TRT_PRECISIONS = ("fp32", "fp16", "int8")


class TensorRTError(RuntimeError):
    """TensorRT could not parse, build or load an engine; the message carries TensorRT's own errors."""


class BatchProfile(BaseModel):
    """The min / opt / max batch sizes an engine accepts; TensorRT tunes its kernels for `opt`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: int = Field(default=1, gt=0)
    opt: int = Field(default=8, gt=0)
    max: int = Field(default=32, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "BatchProfile":
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile must satisfy min <= opt <= max, got {self.min}/{self.opt}/{self.max}")
        return self


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def engine_cache_name(
    name: str, onnx_sha256: str, trt_version: str, gpu_name: str, capability: tuple[int, int],
    precision: str, profile: BatchProfile,
) -> str:
    """The cache file name: every input that makes a serialized engine invalid is part of it."""
    if precision not in TRT_PRECISIONS:
        raise ValueError(f"TensorRT precision must be one of {TRT_PRECISIONS}, got {precision!r}")
    return (f"{_slug(name)}-{onnx_sha256[:SHA_CHARS]}-trt{_slug(trt_version)}-{_slug(gpu_name)}"
            f"-sm{capability[0]}{capability[1]}-{precision}-b{profile.min}_{profile.opt}_{profile.max}.engine")


def unavailable_reason() -> str | None:
    """None when TensorRT can run here, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"tensorrt is not installed ({exc})"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def build_serialized(onnx_path: Path, spec: InputSpec, precision: str, profile: BatchProfile) -> bytes:
    """Parse the ONNX and build a serialized engine (fp16: FP16 kernels allowed; int8: the model's Q/DQ nodes)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantisation: scales come from the Q/DQ ONNX
        config.set_flag(trt.BuilderFlag.FP16)
    item = item_shape(spec)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(INPUT_NAME, (profile.min, *item), (profile.opt, *item), (profile.max, *item))
    config.add_optimization_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"TensorRT failed to build an engine from {onnx_path} ({precision})")
    return bytes(serialized)


def cached_engine_path(
    name: str, onnx_path: Path, spec: InputSpec, precision: str, profile: BatchProfile, cache_dir: Path,
    device: int = 0,
) -> Path:
    """Build (or reuse) the engine for this GPU / TensorRT / precision / profile and return its path."""
    import tensorrt as trt

    props = torch.cuda.get_device_properties(device)
    path = Path(cache_dir) / engine_cache_name(
        name, file_sha256(onnx_path), trt.__version__, props.name, (props.major, props.minor), precision, profile)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            partial.write_bytes(build_serialized(onnx_path, spec, precision, profile))
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return path


class TensorRTEngine(Engine):
    """Runs a serialized TensorRT engine on CUDA, batches above the profile's max split into chunks."""

    def __init__(self, name: str, path: Path, spec: InputSpec, labels: LabelMapping, profile: BatchProfile) -> None:
        import tensorrt as trt

        self.name, self.path, self.spec, self.labels, self.profile = name, Path(path), spec, labels, profile
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise TensorRTError(f"{name}: {self.path} is not a TensorRT engine for this GPU and TensorRT version")
        self._context = self._engine.create_execution_context()
        self._mean, self._std = channel_stats(spec, "cuda")

    @torch.inference_mode()
    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.check_batch(crops)
        if len(crops) == 0:
            return np.zeros((0,), dtype=np.float32)
        outputs = [self._run(crops[i:i + self.profile.max]) for i in range(0, len(crops), self.profile.max)]
        return np.concatenate(outputs)

    def _run(self, crops: np.ndarray) -> np.ndarray:
        x = normalise(crops, self._mean, self._std).contiguous()
        if len(x) < self.profile.min:
            pad = x.new_zeros((self.profile.min - len(x), *x.shape[1:]))
            x = torch.cat([x, pad])
        self._context.set_input_shape(INPUT_NAME, tuple(x.shape))
        out = torch.empty(tuple(self._context.get_tensor_shape(OUTPUT_NAME)), device="cuda", dtype=torch.float32)
        self._context.set_tensor_address(INPUT_NAME, x.data_ptr())
        self._context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise TensorRTError(f"{self.name}: TensorRT execution failed")
        stream.synchronize()
        return self.labels.to_p_fake(out[: len(crops)].float()).cpu().numpy().astype(np.float32)
