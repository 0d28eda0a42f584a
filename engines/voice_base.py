"""The interface every voice engine offers the pipeline, beside `engines.base` for faces.

A voice engine takes float32 mono waveforms already cut to its window at its sample rate, in [-1, 1], and returns
p(fake) per window. Everything model-specific (per-window normalisation, the network, how its output maps to
p(fake)) lives behind that call, so the offline scan and a live audio ring can feed the same engine the same way.
What a window is (its length and rate, and how a shorter clip is filled) is data in `AudioSpec`; the registry
entry (`VoiceModelEntry`) is data too, declared beside each architecture.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from engines.base import LabelMapping
from engines.weights import WeightsSource

if TYPE_CHECKING:
    from engines.calibration import Calibration

VOICE_SAMPLE_RATE = 16000  # every voice engine here eats 16 kHz mono (the rate all public anti-spoofing models use)
# Clipping tolerance on input samples: a float decoder may overshoot full scale by rounding, a caller that forgot to
# scale int16 PCM (values up to 32767) is far beyond it.
FULL_SCALE_SLACK = 1e-3


class AudioSpec(BaseModel):
    """What a voice engine eats: `samples` mono float32 samples at `sample_rate`, in [-1, 1].

    `short` is how a clip shorter than the window is filled: `repeat` tiles it (what AASIST's authors do in
    data_utils.pad, so a short clip is scored as they scored theirs), `zero` pads with silence.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_rate: int = Field(default=VOICE_SAMPLE_RATE, gt=0, description="samples per second the engine expects")
    samples: int = Field(gt=0, description="window length in samples")
    short: Literal["repeat", "zero"] = Field(default="repeat", description="how a clip shorter than the window is "
                                             "filled: tiled (repeat) or padded with silence (zero)")

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


def fit_window(wave: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """One clip as exactly one window: its first `spec.samples` samples, or a shorter clip filled per `spec.short`.

    For `repeat` this is AASIST's `data_utils.pad` (tile int(n / len) + 1 times, keep the first n samples).
    """
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    n = spec.samples
    if len(wave) == 0:
        raise ValueError("an empty clip cannot be fitted to a window")
    if len(wave) >= n:
        return wave[:n].copy()
    if spec.short == "zero":
        return np.pad(wave, (0, n - len(wave)))
    return np.tile(wave, n // len(wave) + 1)[:n]


class VoiceEngine(ABC):
    """A named voice detector with a fixed window: `predict(float32 [B, samples]) -> p_fake [B]`.

    `labels` maps the network's raw output to p(fake); `weights_sha256` is the digest of the weights it was built
    from (calibrations and evidence manifests are tied to it); `backends` are those it has been checked on;
    `weights_path` is where they were read (a calibration beside it is found there) and `calibration` the map the
    live voice path applies to every p(fake) (`engines.calibration.attach`, as for face engines).
    """

    name: str
    spec: AudioSpec
    labels: LabelMapping
    weights_sha256: str | None = None
    weights_path: Path | None = None
    calibration: Calibration | None = None
    backends: tuple[str, ...] = ("torch",)

    @abstractmethod
    def predict(self, waveforms: np.ndarray) -> np.ndarray:
        """Score a batch of windows, float32 (B, spec.samples) in [-1, 1]. Returns float32 p(fake) of shape (B,)."""

    def check_batch(self, waveforms: np.ndarray) -> None:
        """Refuse a batch that is not float32 (B, samples), holds NaN/inf, or is not scaled to [-1, 1]."""
        n = self.spec.samples
        if not isinstance(waveforms, np.ndarray) or waveforms.dtype != np.float32 or waveforms.ndim != 2 \
                or waveforms.shape[1] != n:
            got = f"{waveforms.dtype} {tuple(waveforms.shape)}" if isinstance(waveforms, np.ndarray) else \
                type(waveforms).__name__
            raise ValueError(f"{self.name}: expected a float32 batch of shape (B, {n}) at "
                             f"{self.spec.sample_rate} Hz, got {got}")
        if waveforms.size and not np.isfinite(waveforms).all():
            raise ValueError(f"{self.name}: the waveforms hold NaN or infinite samples")
        peak = float(np.abs(waveforms).max()) if waveforms.size else 0.0
        if peak > 1.0 + FULL_SCALE_SLACK:
            raise ValueError(f"{self.name}: samples must be in [-1, 1] (float PCM); the batch peaks at {peak:.4g} "
                             "(int16 PCM must be divided by 32768 first)")


class TorchVoiceEngine(VoiceEngine):
    """A voice engine backed by a torch module mapping (B, samples) float32 waveforms to raw outputs."""

    def __init__(self, name: str, module: torch.nn.Module, spec: AudioSpec, labels: LabelMapping,
                 device: str | torch.device = "cpu") -> None:
        self.name = name
        self.spec = spec
        self.labels = labels
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)

    def preprocess(self, waveforms: np.ndarray) -> torch.Tensor:
        """float32 (B, samples) -> the network's input tensor on the engine's device (here: the raw waveform)."""
        return torch.from_numpy(np.ascontiguousarray(waveforms)).to(self.device)

    @torch.inference_mode()
    def predict(self, waveforms: np.ndarray) -> np.ndarray:
        self.check_batch(waveforms)
        if len(waveforms) == 0:
            return np.zeros((0,), dtype=np.float32)
        raw = self.module(self.preprocess(waveforms))
        return self.labels.to_p_fake(raw.float()).cpu().numpy().astype(np.float32)


class VoiceModelEntry(BaseModel):
    """A named voice model, as data: where its weights are, its window, its labels and what `models list` shows.

    `builder` is "module:function", imported only when the model is built; the function is
    build(weights_path, entry, device) -> VoiceEngine.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="registry name (`--model NAME`)")
    builder: str = Field(description="'module:function' that builds the engine from its weights")
    description: str = Field(description="one line on what the model is")
    weights: WeightsSource = Field(description="the weight file (or hub checkpoint) and its pinned hash")
    companion_files: dict[str, WeightsSource] = Field(
        default_factory=dict, description="files fetched beside the weights into the same folder (config.json...)")
    audio: AudioSpec = Field(description="the window the engine scores")
    labels: LabelMapping = Field(description="how the raw output becomes p(fake)")
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="p(fake) at or above which a voice is fake")
    card: str | None = Field(default=None, description="model card address, where one exists")
    paper: str | None = Field(default=None, description="the paper the model comes from")
    trained_on: str | None = Field(default=None, description="the data the published weights were trained on")
    licence: str | None = Field(default=None, description="the weights' licence")
    backends: tuple[str, ...] = Field(default=("torch",), description="backends parity was checked on")

    @property
    def hash_status(self) -> str:
        statuses = {"weights": self.weights.hash_status} | {r: s.hash_status for r, s in self.companion_files.items()}
        if len(set(statuses.values())) == 1:
            return statuses["weights"]
        return "; ".join(f"{role} {status}" for role, status in statuses.items())

    def files(self) -> dict[str, WeightsSource]:
        """Every file the model needs, by role: what `models pull` fetches."""
        return {"weights": self.weights, **self.companion_files}

    def card_row(self) -> dict[str, str]:
        """The row `models list` prints (the same columns as a face model's)."""
        a = self.audio
        return {
            "name": self.name,
            "card / paper": self.paper or self.card or "-",
            "trained on": self.trained_on or "-",
            "licence": self.licence or "-",
            "input": f"voice: {a.samples} samples ({a.seconds:.2f} s) mono at {a.sample_rate} Hz, short clips "
                     f"{'repeated' if a.short == 'repeat' else 'zero-padded'}",
            "hash": self.hash_status,
            "backends": ", ".join(self.backends) or "-",
            "address": self.weights.address,
        }
