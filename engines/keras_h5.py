"""Read Keras 2 HDF5 weight files with h5py and copy them into torch modules, without TensorFlow.

Keras 2 (`model.save_weights(...h5)` or the `model_weights` group of a full-model `.h5`) stores a root attribute
`layer_names` in topological order and, per layer, a group with a `weight_names` attribute pointing at datasets
such as `conv2d_1/kernel:0`. Keras' own loader matches the layers that hold weights to the model's layers by that
order, so `load_into` does the same: the caller lists its torch modules in Keras' order, and every mismatch is a
`WeightsFormatError` naming the file, the layer, and the expected and actual shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from engines.base import WeightsFormatError

KERAS_BN_EPSILON = 1e-3  # Keras' BatchNormalization default; the weight file does not record it.
FULL_MODEL_GROUP = "model_weights"  # where a full-model `model.save(...h5)` keeps the weights

LayerWeights = dict[str, np.ndarray]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _short_names(layer: str, names: list[str]) -> list[str]:
    """`conv2d_1/kernel:0` -> `kernel`; nested models keep the path below the layer when last parts collide."""
    full = [n.rsplit(":", 1)[0] for n in names]
    last = [n.rsplit("/", 1)[-1] for n in full]
    if len(set(last)) == len(last):
        return last
    prefix = layer + "/"
    return [n[len(prefix):] if n.startswith(prefix) else n for n in full]


def read_keras_h5(path: str | Path) -> dict[str, LayerWeights]:
    """Every layer of a Keras 2 HDF5 weight file, in the file's (topological) order: name -> {short name: array}.

    Layers without weights (pooling, flatten, ...) map to an empty dict so the order stays visible.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as e:
        raise WeightsFormatError(f"{path}: not an HDF5 file ({e})") from None
    with f:
        root = f[FULL_MODEL_GROUP] if FULL_MODEL_GROUP in f else f
        if "layer_names" not in root.attrs:
            raise WeightsFormatError(f"{path}: no 'layer_names' attribute, not a Keras 2 HDF5 weight file")
        layers: dict[str, LayerWeights] = {}
        for layer in map(_text, root.attrs["layer_names"]):
            if layer not in root:
                raise WeightsFormatError(f"{path}: layer {layer!r} is listed in layer_names but has no group")
            group = root[layer]
            names = [_text(n) for n in group.attrs.get("weight_names", [])]
            keys = _short_names(layer, names)
            if len(set(keys)) != len(keys):
                raise WeightsFormatError(f"{path}: layer {layer!r} has ambiguous weight names {names}")
            try:
                layers[layer] = {k: np.asarray(group[n]) for k, n in zip(keys, names)}
            except KeyError as e:
                raise WeightsFormatError(f"{path}: layer {layer!r} names a missing dataset ({e})") from None
        return layers


def _take(weights: LayerWeights, key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """The array `key` of one layer, checked against the Keras-layout shape the torch module needs."""
    if key not in weights:
        raise WeightsFormatError(f"{where}: missing tensor {key!r} (has {sorted(weights)})")
    array = weights[key]
    if tuple(array.shape) != shape:
        raise WeightsFormatError(f"{where}: tensor {key!r} expected shape {shape}, got {tuple(array.shape)}")
    return array


def _copy(param: torch.Tensor, array: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(param.dtype))


def load_conv2d(conv: nn.Conv2d, weights: LayerWeights, where: str) -> None:
    """Keras Conv2D kernel (H, W, in, out) -> torch Conv2d weight (out, in, H, W), plus the bias if any."""
    out_c, in_c, h, w = conv.weight.shape
    kernel = _take(weights, "kernel", (h, w, in_c, out_c), where)
    _copy(conv.weight, kernel.transpose(3, 2, 0, 1))
    if conv.bias is not None:
        _copy(conv.bias, _take(weights, "bias", (out_c,), where))
    elif "bias" in weights:
        raise WeightsFormatError(f"{where}: the file has a conv bias but the module has none")


def load_dense(linear: nn.Linear, weights: LayerWeights, where: str) -> None:
    """Keras Dense kernel (in, out) -> torch Linear weight (out, in), plus the bias if any."""
    out_f, in_f = linear.weight.shape
    _copy(linear.weight, _take(weights, "kernel", (in_f, out_f), where).T)
    if linear.bias is not None:
        _copy(linear.bias, _take(weights, "bias", (out_f,), where))
    elif "bias" in weights:
        raise WeightsFormatError(f"{where}: the file has a dense bias but the module has none")


def load_batchnorm(bn: nn.BatchNorm2d, weights: LayerWeights, where: str) -> None:
    """Keras BatchNormalization -> BatchNorm2d in eval statistics, with Keras' epsilon (torch's default is 1e-5)."""
    shape = (bn.num_features,)
    _copy(bn.weight, _take(weights, "gamma", shape, where))
    _copy(bn.bias, _take(weights, "beta", shape, where))
    _copy(bn.running_mean, _take(weights, "moving_mean", shape, where))
    _copy(bn.running_var, _take(weights, "moving_variance", shape, where))
    bn.eps = KERAS_BN_EPSILON


def load_into(path: str | Path, modules: Sequence[nn.Module]) -> None:
    """Copy a Keras 2 HDF5 file into `modules`, listed in the file's topological order of layers with weights."""
    layers = [(name, w) for name, w in read_keras_h5(path).items() if w]
    if len(layers) != len(modules):
        raise WeightsFormatError(
            f"{path}: expected {len(modules)} layers with weights, got {len(layers)} ({[n for n, _ in layers]})"
        )
    for (name, weights), module in zip(layers, modules):
        where = f"{path}: layer {name!r}"
        if isinstance(module, nn.Conv2d):
            load_conv2d(module, weights, where)
        elif isinstance(module, nn.Linear):
            load_dense(module, weights, where)
        elif isinstance(module, nn.BatchNorm2d):
            load_batchnorm(module, weights, where)
        else:
            raise TypeError(f"no Keras loader for {type(module).__name__}")
