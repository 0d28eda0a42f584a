"""The interface every engine offers the pipeline.

An engine takes uint8 RGB face crops already cut at its input size and returns p(fake) per item. Everything
model-specific (normalisation, layout, how the raw output maps to p(fake)) lives behind that call, so the
scheduler can batch crops of many streams into one call without knowing which network it feeds.
"""

from __future__ import annotations

import logging
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engines.quality import NO_FLOOR, QualityFloor

if TYPE_CHECKING:
    from engines.calibration import Calibration


log = logging.getLogger(__name__)
FROZEN_SHAPES = 4  # batch shapes whose frozen graphs are kept (each holds its own copy of the folded weights)


class WeightsFormatError(ValueError):
    """A weight file does not match the architecture it is loaded into (missing tensor, wrong shape...)."""


class InputSpec(BaseModel):
    """What an engine eats: square RGB crops of `size` pixels, normalised as (x/255 - mean) / std.

    `frames` is 1 for frame scorers and the clip length for temporal engines (16 for VideoMAE, 30 for the LSTM).
    `margin` is the fraction of the detected face box added on each side before the crop is resized.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(gt=0)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    frames: int = Field(default=1, gt=0)
    margin: float = Field(default=0.2, ge=0.0)


class LabelMapping(BaseModel):
    """How a network's raw output becomes p(fake), the only score the product ever reports.

    - `sigmoid`: one output unit; `positive` says which class the sigmoid is the probability of.
    - `softmax`: one unit per class (already softmaxed or logits, see `logits`); `fake_index` picks p(fake).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["sigmoid", "softmax"]
    positive: Literal["fake", "real"] | None = None
    fake_index: int | None = None
    logits: bool = False

    @model_validator(mode="after")
    def _complete(self) -> "LabelMapping":
        if self.kind == "sigmoid" and self.positive is None:
            raise ValueError("a sigmoid output must say which class it is the probability of (positive)")
        if self.kind == "softmax" and self.fake_index is None:
            raise ValueError("a softmax output must say which index is 'fake' (fake_index)")
        return self

    def to_p_fake(self, raw: torch.Tensor) -> torch.Tensor:
        """Map a batch of raw outputs, shape (N,) / (N, 1) for sigmoid or (N, C) for softmax, to p(fake) (N,)."""
        if self.kind == "sigmoid":
            p = torch.sigmoid(raw) if self.logits else raw
            p = p.reshape(p.shape[0])
            return p if self.positive == "fake" else 1.0 - p
        p = torch.softmax(raw, dim=-1) if self.logits else raw
        return p[:, self.fake_index]


class Engine(ABC):
    """A named detector with a fixed input spec: `predict(uint8 crops) -> p_fake`.

    Besides its name and spec, an engine carries what the registry knows of it, declared here so that a reader
    sees who sets each: `build_engine` sets the entry's quality floor and the weights' path and digest (a
    calibration is tied to that digest, evidence manifests name it); `engines.calibration.attach` sets the
    calibration; `adopt` carries all four to the engine a backend converts it to. An engine built by hand keeps
    the defaults: no floor, no known weights, no calibration."""

    name: str
    spec: InputSpec
    quality: QualityFloor = NO_FLOOR
    weights_path: Path | None = None
    weights_sha256: str | None = None
    calibration: Calibration | None = None

    def adopt(self, source: Engine) -> Engine:
        """Take `source`'s registry facts: this engine is `source` converted to another backend. Returns self."""
        self.quality, self.calibration = source.quality, source.calibration
        self.weights_path, self.weights_sha256 = source.weights_path, source.weights_sha256
        return self

    @abstractmethod
    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Score a batch of uint8 RGB crops.

        `crops` is (N, size, size, 3) for frame scorers, or (N, frames, size, size, 3) for temporal engines.
        Returns float32 p(fake) of shape (N,).
        """

    def check_batch(self, crops: np.ndarray) -> None:
        """Refuse a batch whose shape does not match the spec, with a message naming both."""
        s = self.spec
        item = (s.size, s.size, 3) if s.frames == 1 else (s.frames, s.size, s.size, 3)
        if crops.dtype != np.uint8 or crops.ndim != len(item) + 1 or tuple(crops.shape[1:]) != item:
            raise ValueError(
                f"{self.name}: expected uint8 batch of shape (N, {', '.join(map(str, item))}), "
                f"got {crops.dtype} {tuple(crops.shape)}"
            )


def channel_stats(spec: InputSpec, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The spec's mean and std as (1, 3, 1, 1) float32 tensors on `device`, built once per engine."""
    shape = (1, 3, 1, 1)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(shape)
    std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(shape)
    return mean, std


def normalise(crops: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, [T,] H, W, 3) -> float32 (x/255 - mean) / std as (N, [T,] 3, H, W) on mean's device.

    Shared by every backend (torch, ONNX Runtime...) so they all feed their networks bit-identical inputs and
    any disagreement between them is the network's, never the preprocessing's.
    """
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(mean.device)
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - mean) / std
    return x.reshape(*lead, *x.shape[1:])


class TorchEngine(Engine):
    """An engine backed by a torch module that maps a normalised NCHW (or NTCHW) float batch to raw outputs."""

    def __init__(
        self,
        name: str,
        module: torch.nn.Module,
        spec: InputSpec,
        labels: LabelMapping,
        device: str | torch.device = "cpu",
    ) -> None:
        self.name = name
        self.spec = spec
        self.labels = labels
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        # NHWC lets oneDNN (CPU) and cuDNN (tensor cores) pick their fast convolution kernels: about 1.7x on
        # the CPU for Xception's separable convolutions (benchmarks/engines.py). Frame engines only: 4-D input.
        self.channels_last = spec.frames == 1
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self._frozen: OrderedDict[tuple[int, ...], torch.jit.ScriptModule] = OrderedDict()
        self.freeze = self.channels_last and self.device.type == "cpu"
        self._mean, self._std = channel_stats(spec, self.device)
        self.half = False

    @property
    def frozen_shapes(self) -> tuple[tuple[int, ...], ...]:
        """The input shapes that have a frozen graph now, oldest first (at most FROZEN_SHAPES are kept)."""
        return tuple(self._frozen)

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 (N, [T,] H, W, 3) -> float32 normalised (N, [T,] 3, H, W) on the engine's device."""
        x = normalise(crops, self._mean, self._std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.half() if self.half else x

    def to_half(self) -> "TorchEngine":
        """Run the network in fp16 (CUDA only: CPU kernels for half are slow or missing)."""
        if self.device.type != "cuda":
            raise ValueError(f"{self.name}: fp16 needs a CUDA device, this engine is on {self.device}")
        self.module.half()
        self.half = True
        return self

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        """Run the module; on the CPU through a frozen TorchScript graph per input shape, which folds BatchNorm
        into the convolutions and lets oneDNN fuse them (Xception: ~0.7x -> ~0.97x of ONNX Runtime's rate).
        Traced per shape because a trace may bake the batch size in; falls back to eager if tracing fails."""
        if not self.freeze:
            return self.module(x)
        key = tuple(x.shape)
        graph = self._frozen.get(key)
        if graph is None:
            try:
                with warnings.catch_warnings():  # shape arithmetic is constant for the one shape traced
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    graph = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(self.module, x)))
            except Exception as exc:  # unusual modules: keep them eager rather than fail
                log.info("%s: running eager (trace failed: %s)", self.name, exc)
                self.freeze = False
                return self.module(x)
            self._frozen[key] = graph
            while len(self._frozen) > FROZEN_SHAPES:
                self._frozen.popitem(last=False)
        else:
            self._frozen.move_to_end(key)
        return graph(x)

    @torch.inference_mode()
    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.check_batch(crops)
        if len(crops) == 0:
            return np.zeros((0,), dtype=np.float32)
        raw = self._network(self.preprocess(crops))
        return self.labels.to_p_fake(raw.float()).cpu().numpy().astype(np.float32)
