"""Read Keras 2 HDF5 weight files with h5py and copy them into torch modules, without TensorFlow.

Keras 2 (`model.save_weights(...h5)` or the `model_weights` group of a full-model `.h5`) stores a root attribute
`layer_names` in topological order and, per layer, a group with a `weight_names` attribute pointing at datasets
such as `conv2d_1/kernel:0`. Keras' own loader matches the layers that hold weights to the model's layers by that
order, so `load_into` does the same: the caller lists its torch modules in Keras' order, and every mismatch is a
`WeightsFormatError` naming the file, the layer, and the expected and actual shapes.

Keras 3 (`.weights.h5`, and the `model.weights.h5` inside a `.keras` zip) drops the names: each layer is a group
`layers/<class>_k/vars/<i>`, named after its class (snake_case) with a counter over the model's layer list, and its
variables are numbered in creation order. `read_keras3_layers` rebuilds the Keras 2 style {name: array} dicts from
that, so both layouts feed the same `load_layer`.
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


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as e:
        raise WeightsFormatError(f"{path}: not an HDF5 file ({e})") from None


def _root(f: h5py.File, path: Path) -> h5py.Group:
    root = f[FULL_MODEL_GROUP] if FULL_MODEL_GROUP in f else f
    if "layer_names" not in root.attrs:
        raise WeightsFormatError(f"{path}: no 'layer_names' attribute, not a Keras 2 HDF5 weight file")
    return root


def read_layer_names(path: str | Path) -> list[str]:
    """Every layer name of a Keras 2 HDF5 file in topological order, weightless layers (activations, pools,
    dropout) included: the only record such a file keeps of the layers that carry no weights."""
    path = Path(path)
    with _open(path) as f:
        return [_text(n) for n in _root(f, path).attrs["layer_names"]]


def read_keras_h5(path: str | Path) -> dict[str, LayerWeights]:
    """Every layer of a Keras 2 HDF5 weight file, in the file's (topological) order: name -> {short name: array}.

    Layers without weights (pooling, flatten, ...) map to an empty dict so the order stays visible.
    """
    path = Path(path)
    with _open(path) as f:
        root = _root(f, path)
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


def load_separable_conv2d(depthwise: nn.Conv2d, pointwise: nn.Conv2d, weights: LayerWeights, where: str) -> None:
    """Keras SeparableConv2D -> depthwise (in, 1, H, W) from (H, W, in, 1), then a 1x1 pointwise Conv2d."""
    in_c, _, h, w = depthwise.weight.shape
    _copy(depthwise.weight, _take(weights, "depthwise_kernel", (h, w, in_c, 1), where).transpose(2, 3, 0, 1))
    out_c = pointwise.weight.shape[0]
    pointwise_weights = {"kernel": _take(weights, "pointwise_kernel", (1, 1, in_c, out_c), where)}
    if "bias" in weights:
        pointwise_weights["bias"] = weights["bias"]
    load_conv2d(pointwise, pointwise_weights, where)


def load_lstm(lstm: nn.LSTM, weights: LayerWeights, where: str) -> None:
    """Keras LSTM (kernel (in, 4u), recurrent_kernel (u, 4u), bias (4u)) -> single-layer torch LSTM.

    Both order the gates input, forget, cell, output, so the kernels only transpose. Keras has one bias where
    torch adds two, so the Keras bias goes to `bias_ih` and `bias_hh` is zeroed.
    """
    if lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size:
        raise TypeError("only a single-layer, unidirectional LSTM maps to a Keras LSTM")
    units, gates = lstm.hidden_size, 4 * lstm.hidden_size
    _copy(lstm.weight_ih_l0, _take(weights, "kernel", (lstm.input_size, gates), where).T)
    _copy(lstm.weight_hh_l0, _take(weights, "recurrent_kernel", (units, gates), where).T)
    if lstm.bias:
        _copy(lstm.bias_ih_l0, _take(weights, "bias", (gates,), where))
        with torch.no_grad():
            lstm.bias_hh_l0.zero_()
    elif "bias" in weights:
        raise WeightsFormatError(f"{where}: the file has an LSTM bias but the module has none")


def load_layer(module: nn.Module, weights: LayerWeights, where: str) -> None:
    """Dispatch one Keras layer's weights on the torch module type; a module with `depthwise` and `pointwise`
    Conv2d children stands for a SeparableConv2D."""
    depthwise, pointwise = getattr(module, "depthwise", None), getattr(module, "pointwise", None)
    if isinstance(depthwise, nn.Conv2d) and isinstance(pointwise, nn.Conv2d):
        load_separable_conv2d(depthwise, pointwise, weights, where)
    elif isinstance(module, nn.Conv2d):
        load_conv2d(module, weights, where)
    elif isinstance(module, nn.Linear):
        load_dense(module, weights, where)
    elif isinstance(module, nn.BatchNorm2d):
        load_batchnorm(module, weights, where)
    elif isinstance(module, nn.LSTM):
        load_lstm(module, weights, where)
    else:
        raise TypeError(f"no Keras loader for {type(module).__name__}")


def load_into(path: str | Path, modules: Sequence[nn.Module]) -> None:
    """Copy a Keras 2 HDF5 file into `modules`, listed in the file's topological order of layers with weights."""
    layers = [(name, w) for name, w in read_keras_h5(path).items() if w]
    if len(layers) != len(modules):
        raise WeightsFormatError(
            f"{path}: expected {len(modules)} layers with weights, got {len(layers)} ({[n for n, _ in layers]})"
        )
    for (name, weights), module in zip(layers, modules):
        load_layer(module, weights, f"{path}: layer {name!r}")


def split_nested(layers: dict[str, LayerWeights]) -> list[tuple[str, LayerWeights]]:
    """Flatten nested models (a TimeDistributed or functional sub-model saved as one Keras 2 layer whose weights
    are named `inner_layer/var`) into one entry per inner layer, in order of first appearance.

    Keras 2 lists a nested model's trainable weights first and the BN moving statistics last, so grouping by the
    inner layer's name (not by position) is what puts each layer's variables back together; the first appearances
    follow the inner model's layer order, which is the order Keras' own loader relies on.
    """
    flat: list[tuple[str, LayerWeights]] = []
    for name, weights in layers.items():
        if not weights:
            continue
        if not any("/" in key for key in weights):
            flat.append((name, weights))
            continue
        inner: dict[str, LayerWeights] = {}
        for key, array in weights.items():
            layer, _, var = key.rpartition("/")
            inner.setdefault(layer or name, {})[var] = array
        flat.extend((f"{name}/{layer}", w) for layer, w in inner.items())
    return flat


# Keras 3 numbers a layer's variables in creation order; these are their Keras 2 names, per layer class.
KERAS3_VAR_NAMES: dict[str, tuple[str, ...]] = {
    "conv2d": ("kernel", "bias"),
    "separable_conv2d": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
    "lstm_cell": ("kernel", "recurrent_kernel", "bias"),
}


def read_keras3_vars(group: h5py.Group, layer_class: str, where: str) -> LayerWeights:
    """One Keras 3 layer group (holding `vars/0`, `vars/1`...) as {Keras 2 name: array}."""
    names = KERAS3_VAR_NAMES[layer_class]
    if "vars" not in group:
        raise WeightsFormatError(f"{where}: no 'vars' group in {group.name}")
    variables = group["vars"]
    if len(variables) > len(names):
        raise WeightsFormatError(f"{where}: {group.name} has {len(variables)} variables, a {layer_class} has at most "
                                 f"{len(names)}")
    return {names[i]: np.asarray(variables[str(i)]) for i in range(len(variables))}


def read_keras3_layers(model_group: h5py.Group, layer_classes: Sequence[str], where: str) -> list[LayerWeights]:
    """The weights of a Keras 3 model's layers, given the class of each layer that holds weights, in the model's
    layer order: the k-th layer of a class is stored as `layers/<class>` (k = 0) or `layers/<class>_k`."""
    if "layers" not in model_group:
        raise WeightsFormatError(f"{where}: no 'layers' group in {model_group.name}, not a Keras 3 weight file")
    stored = model_group["layers"]
    seen: dict[str, int] = {}
    out = []
    for layer_class in layer_classes:
        k = seen.get(layer_class, 0)
        seen[layer_class] = k + 1
        key = layer_class if k == 0 else f"{layer_class}_{k}"
        if key not in stored:
            raise WeightsFormatError(f"{where}: missing layer {stored.name}/{key}")
        out.append(read_keras3_vars(stored[key], layer_class, f"{where}: layer {key!r}"))
    return out
