"""Xception + LSTM video classifier (seed card 002), imported from the authors' Keras model file.

The card's `build_model`: TimeDistributed(keras.applications.Xception(include_top=False, pooling="avg")) over
TIME_STEPS face frames -> LSTM(256) -> Dropout(0.5) -> Dense(2, softmax), classes ["Real", "Fake"], so
index 1 is p(fake). The card publishes `COMBINED_best_Phase1.keras` (a Keras 3 zip of `config.json` and
`model.weights.h5`) but no download address; a legacy full-model `.h5` or a Keras 3 `.weights.h5` of the same
model load too.

TIME_STEPS and the frame size are read from the file's config (the card only comments "TIME_STEPS = 30"), so the
engine's InputSpec follows the file; weights-only files, which carry no config, keep the registry's spec.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.base import InputSpec, LabelMapping, TorchEngine, WeightsFormatError
from engines.entry import ModelEntry
from engines.keras_h5 import read_keras3_vars, read_keras_h5, split_nested
from engines.keras_xception import (FEATURES, KERAS_ZIP_CONFIG, KerasXception, is_keras3, load_keras3_group,
                                    load_layers, open_keras_weights)

from engines.registration import register_architecture, register_models
from engines.weights import WeightsSource

LSTM_UNITS = 256
NUM_CLASSES = 2
FAKE_INDEX = 1  # the card's class_names = ['Real', 'Fake'] and it prints probabilities[1] as Fake
# Where a Keras 3 file keeps each part (layers are named after their class, see engines/keras_h5.py).
KERAS3_BACKBONE = "layers/time_distributed/layer"
KERAS3_LSTM = "layers/lstm/cell"
KERAS3_DENSE = "layers/dense"
LEGACY_CONFIG_ATTR = "model_config"  # a full-model Keras `.h5` keeps its JSON config here
SUPPORTED_ACTIVATIONS = {"activation": "tanh", "recurrent_activation": "sigmoid"}


@dataclass(frozen=True)
class LstmModelConfig:
    """What the engine needs from a Keras model config; None where the config leaves it open."""

    time_steps: int | None
    size: int | None
    units: int
    classes: int


def _layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    inner = config.get("config", {})
    layers = inner.get("layers") if isinstance(inner, dict) else inner
    if not isinstance(layers, list):
        raise WeightsFormatError("model config has no layer list (expected a Keras Functional/Sequential model)")
    return layers


def _class_names(obj: Any) -> set[str]:
    """Every `class_name` anywhere in a (nested) config, to see what the TimeDistributed wraps."""
    if isinstance(obj, dict):
        own = {obj["class_name"]} if isinstance(obj.get("class_name"), str) else set()
        return own.union(*(_class_names(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(_class_names(v) for v in obj))
    return set()


def parse_config(config: dict[str, Any], source: object) -> LstmModelConfig:
    """Check the config is the card's architecture and read its TIME_STEPS, frame size, units and classes."""
    by_class: dict[str, dict[str, Any]] = {}
    for layer in _layers(config):
        by_class.setdefault(layer["class_name"], layer["config"])
    missing = {"InputLayer", "TimeDistributed", "LSTM", "Dense"} - by_class.keys()
    if missing:
        raise WeightsFormatError(f"{source}: not the card's Xception+LSTM model (no {', '.join(sorted(missing))})")
    wrapped = _class_names(by_class["TimeDistributed"].get("layer"))
    if "GlobalAveragePooling2D" not in wrapped or "SeparableConv2D" not in wrapped:
        raise WeightsFormatError(f"{source}: the TimeDistributed layer is not an average-pooled Xception")
    lstm, dense = by_class["LSTM"], by_class["Dense"]
    for key, want in SUPPORTED_ACTIVATIONS.items():
        if lstm.get(key, want) != want:
            raise WeightsFormatError(f"{source}: LSTM {key} {lstm[key]!r} is not supported (only {want!r})")
    if lstm.get("go_backwards") or lstm.get("return_sequences"):
        raise WeightsFormatError(f"{source}: only a forward LSTM returning its last state is supported")
    if dense.get("activation") != "softmax":
        raise WeightsFormatError(f"{source}: the Dense activation is {dense.get('activation')!r}, not softmax")
    inp = by_class["InputLayer"]
    shape = inp.get("batch_shape") or inp.get("batch_input_shape")
    if not shape or len(shape) != 5:
        raise WeightsFormatError(f"{source}: input shape {shape} is not (batch, TIME_STEPS, H, W, 3)")
    _, steps, height, width, _ = shape
    if height != width:
        raise WeightsFormatError(f"{source}: non-square input {height}x{width}")
    return LstmModelConfig(time_steps=steps, size=height, units=int(lstm["units"]), classes=int(dense["units"]))


def read_config(path: Path) -> dict[str, Any] | None:
    """The JSON model config of a `.keras` archive or a full-model `.h5`; None for weights-only files."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(KERAS_ZIP_CONFIG)) if KERAS_ZIP_CONFIG in z.namelist() else None
    with open_keras_weights(path) as f:
        raw = f.attrs.get(LEGACY_CONFIG_ATTR)
    if raw is None:
        return None
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


class XceptionLSTM(nn.Module):
    """(N, T, 3, H, W) in [-1, 1] -> per-frame Xception features -> LSTM last state -> Dense softmax (N, classes).

    Dropout is omitted: it is the identity at inference.
    """

    def __init__(self, units: int = LSTM_UNITS, classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.backbone = KerasXception()
        self.lstm = nn.LSTM(FEATURES, units, batch_first=True)
        self.dense = nn.Linear(units, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x.flatten(0, 1)).reshape(x.shape[0], x.shape[1], FEATURES)
        _, (hidden, _) = self.lstm(features)
        return torch.softmax(self.dense(hidden[-1]), dim=-1)


def _sizes_from_weights(path: Path) -> tuple[int, int]:
    """LSTM units and classes from the Dense kernel when the file carries no config."""
    with open_keras_weights(path) as f:
        if is_keras3(f):
            if KERAS3_DENSE not in f:
                raise WeightsFormatError(f"{path}: no {KERAS3_DENSE} group, not the card's Xception+LSTM model")
            kernel = read_keras3_vars(f[KERAS3_DENSE], "dense", str(path))["kernel"]
            return kernel.shape[0], kernel.shape[1]
    layers = split_nested(read_keras_h5(path))
    kernel = layers[-1][1].get("kernel")
    if kernel is None or kernel.ndim != 2:
        raise WeightsFormatError(f"{path}: the last layer with weights is not a Dense")
    return kernel.shape[0], kernel.shape[1]


def load_xception_lstm(path: str | Path) -> tuple[XceptionLSTM, LstmModelConfig | None]:
    """Build the module from a `.keras`, full-model `.h5` or Keras 3 `.weights.h5`; also return its config."""
    path = Path(path)
    raw = read_config(path)
    config = parse_config(raw, path) if raw is not None else None
    units, classes = (config.units, config.classes) if config else _sizes_from_weights(path)
    model = XceptionLSTM(units, classes)
    with open_keras_weights(path) as f:
        keras3 = is_keras3(f)
        if keras3:
            for group in (KERAS3_BACKBONE, KERAS3_LSTM, KERAS3_DENSE):
                if group not in f:
                    raise WeightsFormatError(f"{path}: no {group} group, not the card's Xception+LSTM model")
            load_keras3_group(model.backbone.keras_layers(), f[KERAS3_BACKBONE], path)
            load_layers([model.lstm, model.dense], [
                (KERAS3_LSTM, read_keras3_vars(f[KERAS3_LSTM], "lstm_cell", str(path))),
                (KERAS3_DENSE, read_keras3_vars(f[KERAS3_DENSE], "dense", str(path))),
            ], path)
    if not keras3:
        load_layers([*model.backbone.keras_layers(), model.lstm, model.dense], split_nested(read_keras_h5(path)), path)
    return model, config


@register_architecture("xception_lstm")
def build_xception_lstm(weights_path: Path, entry: ModelEntry, device: str | torch.device = "cpu") -> TorchEngine:
    """Registry builder: the spec's frames and size follow the file's config where it states them."""
    model, config = load_xception_lstm(weights_path)
    spec: InputSpec = entry.input
    if config is not None:
        update = {"frames": config.time_steps, "size": config.size}
        spec = spec.model_copy(update={k: v for k, v in update.items() if v is not None})
    if entry.labels.fake_index is not None and entry.labels.fake_index >= model.dense.out_features:
        raise WeightsFormatError(f"{weights_path}: {model.dense.out_features} classes, no fake index "
                                 f"{entry.labels.fake_index}")
    return TorchEngine(entry.name, model, spec, entry.labels, device)


CARD002_TIME_STEPS = 30  # the card's commented default; the builder uses the file's own TIME_STEPS

register_models(
    ModelEntry(
        name="xception-lstm",
        architecture="xception_lstm",
        card="002",
        description="TimeDistributed Keras Xception + LSTM(256) over face-frame sequences, trained on "
                    "FaceForensics++ and Celeb-DF v2",
        # The card names the file but publishes no address (no URL, no hub repo) and no hash.
        weights=WeightsSource(
            filename="COMBINED_best_Phase1.keras",
            hint="Seed card 002 names COMBINED_best_Phase1.keras but publishes no download address: get the "
                 "Keras file from the card's authors (a full-model .h5 of the same model also loads), or pass "
                 "--weights FILE.",
        ),
        # Frames and size are overridden by the file's config (its Input shape).
        input=InputSpec(size=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), frames=CARD002_TIME_STEPS),
        # Dense(2, softmax) over the card's class_names = ['Real', 'Fake']: index 1 is p(fake).
        labels=LabelMapping(kind="softmax", fake_index=FAKE_INDEX),
        trained_on="FaceForensics++ and Celeb-DF v2 (card 002)",
        licence="MIT (card 002)",
        backends=("torch", "onnx"),
    ),
)
