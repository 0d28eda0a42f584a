"""Write torch Keras-Xception modules back in Keras 3's weights layout, the inverse of `engines.keras_h5`.

`lstm` delivers card 002's model as `xception_lstm.weights.h5`: the file `model.save_weights()` writes for the
card's `build_model` (TimeDistributed Xception, LSTM(256), Dropout, Dense(2, softmax)). The xception-lstm engine
loads it (`--weights FILE`), and so does Keras itself with the card's own `model.load_weights(path)`.

Layout: `layers/<class>[_k]/vars/<i>` per layer with weights, counted per class in model order; the Xception sits
under `layers/time_distributed/layer`, the LSTM's variables under `layers/lstm/cell`. Keras kernels are
(H, W, in, out), dense kernels (in, out), and an LSTM has one bias where torch has two (their sum).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from engines.keras_xception import KerasXception, keras_class

TIME_DISTRIBUTED = "time_distributed"
# Keras' names for the card model's layers that hold no weights; written (empty) so the file mirrors Keras'.
EMPTY_TOP_LAYERS = ("input_layer", "dropout")
LSTM_FILE = "xception_lstm.weights.h5"


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def keras_vars(module: nn.Module) -> list[np.ndarray]:
    """A module's weights as Keras' variables, in Keras' creation order (see engines.keras_h5.KERAS3_VAR_NAMES)."""
    depthwise, pointwise = getattr(module, "depthwise", None), getattr(module, "pointwise", None)
    if isinstance(depthwise, nn.Conv2d) and isinstance(pointwise, nn.Conv2d):
        return [_np(depthwise.weight).transpose(2, 3, 0, 1), _np(pointwise.weight).transpose(2, 3, 1, 0)]
    if isinstance(module, nn.Conv2d):
        return [_np(module.weight).transpose(2, 3, 1, 0)] + ([_np(module.bias)] if module.bias is not None else [])
    if isinstance(module, nn.BatchNorm2d):
        return [_np(module.weight), _np(module.bias), _np(module.running_mean), _np(module.running_var)]
    if isinstance(module, nn.Linear):
        return [_np(module.weight).T] + ([_np(module.bias)] if module.bias is not None else [])
    if isinstance(module, nn.LSTM):
        if module.num_layers != 1 or module.bidirectional or module.proj_size or not module.bias:
            raise TypeError("only a single-layer, unidirectional LSTM with biases maps to a Keras LSTM")
        return [_np(module.weight_ih_l0).T, _np(module.weight_hh_l0).T, _np(module.bias_ih_l0 + module.bias_hh_l0)]
    raise TypeError(f"no Keras layout for {type(module).__name__}")


def _layer(parent: h5py.Group, name: str, arrays: Sequence[np.ndarray], var_name: str | None = None) -> h5py.Group:
    group = parent.create_group(name)
    variables = group.create_group("vars")
    variables.attrs["name"] = var_name or name
    for i, a in enumerate(arrays):
        variables.create_dataset(str(i), data=np.ascontiguousarray(a, dtype=np.float32))
    return group


def write_model_layers(group: h5py.Group, modules: Sequence[nn.Module]) -> None:
    """`layers/<class>_k/vars` for each module, k counting that class in order, as Keras 3 names them."""
    layers = group.require_group("layers")
    seen: dict[str, int] = {}
    for module in modules:
        cls = keras_class(module)
        k = seen.get(cls, 0)
        seen[cls] = k + 1
        _layer(layers, cls if k == 0 else f"{cls}_{k}", keras_vars(module))


def write_xception(model: KerasXception, path: Path) -> Path:
    """A bare Xception as Keras 3 `.weights.h5` (what `Xception(include_top=False).save_weights` writes)."""
    with h5py.File(path, "w") as f:
        write_model_layers(f, model.keras_layers())
        f.create_group("vars").attrs["name"] = "xception"
    return path


def write_xception_lstm(path: Path, backbone: KerasXception, lstm: nn.LSTM, dense: nn.Linear) -> Path:
    """Card 002's model as Keras 3 `.weights.h5`; written to a temporary name first, so a kill leaves no half file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        layers = f.create_group("layers")
        for name in EMPTY_TOP_LAYERS:
            _layer(layers, name, [])
        td = _layer(layers, TIME_DISTRIBUTED, [])
        inner = td.create_group("layer")
        inner.create_group("vars").attrs["name"] = "xception"
        write_model_layers(inner, backbone.keras_layers())
        cell = _layer(layers, "lstm", []).create_group("cell")
        cell_vars = cell.create_group("vars")
        cell_vars.attrs["name"] = "lstm_cell"
        for i, a in enumerate(keras_vars(lstm)):
            cell_vars.create_dataset(str(i), data=a)
        _layer(layers, "dense", keras_vars(dense))
        f.create_group("vars").attrs["name"] = "functional"
    tmp.replace(path)
    return path
