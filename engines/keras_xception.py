"""`keras.applications.Xception(include_top=False, pooling="avg")` in PyTorch, loading Keras weight files.

Cards 000 (Xception + logistic regression) and 002 (Xception + LSTM) both use the Keras ImageNet Xception as a
2048-d feature extractor, so the engines share this module. It matches Keras layer for layer: 'valid' stem convs,
SeparableConv2D = bias-free 3x3 depthwise + 1x1 pointwise, BatchNormalization with epsilon 1e-3, residual 1x1
stride-2 convs, and TensorFlow's "same" max-pooling, which pads the odd pixel after (bottom/right) when the size
is even (74 -> 37 at 299 input) where torch's symmetric padding would shift every window.

Weights load, without TensorFlow, from either layout Keras writes:
- Keras 2 HDF5 (the published `xception_weights_tf_dim_ordering_tf_kernels_notop.h5`, or the Xception nested in a
  full-model `.h5`), matched by layer order as Keras' own loader does;
- Keras 3 (`.weights.h5`, or `model.weights.h5` inside a `.keras` zip), `layers/<class>_k/vars/<i>`.
Preprocessing is Keras' `xception.preprocess_input`, x / 127.5 - 1, i.e. mean 0.5 and std 0.5 on [0, 1].
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path

import h5py
import torch
import torch.nn.functional as F
from torch import nn

from engines.base import WeightsFormatError
from engines.keras_h5 import (KERAS_BN_EPSILON, LayerWeights, load_layer, read_keras3_layers, read_keras_h5,
                              split_nested)

FEATURES = 2048
STEM_CHANNELS = (32, 64)
MIDDLE_CHANNELS = 728
MIDDLE_BLOCKS = 8
MIDDLE_REPS = 3
EXIT_CHANNELS = (1024, 1536, 2048)
POOL_KERNEL, POOL_STRIDE = 3, 2
MIN_INPUT_SIZE = 71  # Keras refuses smaller inputs
KERAS_ZIP_WEIGHTS = "model.weights.h5"  # the weights member of a `.keras` archive
KERAS_ZIP_CONFIG = "config.json"
# Keras' ImageNet Xception without top, the file `keras.applications.Xception(weights="imagenet",
# include_top=False)` fetches. Keras publishes only an md5 for it (`file_hash` in keras/src/applications/xception.py).
XCEPTION_NOTOP_FILENAME = "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
XCEPTION_NOTOP_URL = "https://storage.googleapis.com/tensorflow/keras-applications/xception/" + XCEPTION_NOTOP_FILENAME
XCEPTION_NOTOP_MD5 = "b0042744bf5b25fce3cb969f33bebb97"


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same": output ceil(size/stride); the odd pixel of padding goes after (bottom/right)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class KerasMaxPool2d(nn.Module):
    """MaxPooling2D(kernel, stride, padding="same"). Symmetric cases use torch's own (implicitly -inf) padding;
    uneven ones pad -inf explicitly, so padding never wins a max, exactly as in TensorFlow."""

    def __init__(self, kernel: int = POOL_KERNEL, stride: int = POOL_STRIDE) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_pads(x.shape[-2], self.kernel, self.stride)
        left, right = same_pads(x.shape[-1], self.kernel, self.stride)
        if top == bottom == left == right:
            return F.max_pool2d(x, self.kernel, self.stride, padding=top)
        x = F.pad(x, (left, right, top, bottom), value=-math.inf)
        return F.max_pool2d(x, self.kernel, self.stride)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D(3x3, padding="same", use_bias=False): depthwise 3x3 then pointwise 1x1."""

    def __init__(self, in_c: int, out_c: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_c, in_c, 3, padding=1, groups=in_c, bias=False)
        self.pointwise = nn.Conv2d(in_c, out_c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPSILON)


class SepConvBN(nn.Module):
    """`blockN_sepconvK` + `blockN_sepconvK_bn`, optionally preceded by the `..._act` ReLU."""

    def __init__(self, in_c: int, out_c: int, relu_first: bool) -> None:
        super().__init__()
        self.relu_first = relu_first
        self.sepconv, self.bn = SeparableConv2d(in_c, out_c), _bn(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.sepconv(F.relu(x) if self.relu_first else x))  # not in place: x feeds the residual

    def keras_layers(self) -> list[nn.Module]:
        return [self.sepconv, self.bn]


class DownBlock(nn.Module):
    """Blocks 2, 3, 4 and 13: two SepConvBN, "same" max-pool 3/2, plus a 1x1 stride-2 conv + BN residual."""

    def __init__(self, in_c: int, mid_c: int, out_c: int, relu_first: bool) -> None:
        super().__init__()
        self.sep1 = SepConvBN(in_c, mid_c, relu_first)
        self.sep2 = SepConvBN(mid_c, out_c, relu_first=True)
        self.pool = KerasMaxPool2d()
        self.residual = nn.Conv2d(in_c, out_c, 1, stride=POOL_STRIDE, bias=False)  # 'same' = no padding at k=1
        self.residual_bn = _bn(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.sep2(self.sep1(x))) + self.residual_bn(self.residual(x))

    def keras_layers(self) -> list[nn.Module]:
        """Keras lists the main path before the residual conv (though the code creates the residual first)."""
        return [*self.sep1.keras_layers(), *self.sep2.keras_layers(), self.residual, self.residual_bn]


class MiddleBlock(nn.Module):
    """Blocks 5-12: three ReLU-SepConvBN at 728 channels plus the identity."""

    def __init__(self, channels: int = MIDDLE_CHANNELS) -> None:
        super().__init__()
        self.seps = nn.Sequential(*(SepConvBN(channels, channels, relu_first=True) for _ in range(MIDDLE_REPS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seps(x) + x

    def keras_layers(self) -> list[nn.Module]:
        return [m for sep in self.seps for m in sep.keras_layers()]


class KerasXception(nn.Module):
    """(N, 3, H, W) in [-1, 1], H, W >= 71 -> (N, 2048) globally average-pooled features."""

    def __init__(self) -> None:
        super().__init__()
        c1, c2 = STEM_CHANNELS
        e1, e2, e3 = EXIT_CHANNELS
        self.conv1, self.bn1 = nn.Conv2d(3, c1, 3, stride=2, bias=False), _bn(c1)  # 'valid'
        self.conv2, self.bn2 = nn.Conv2d(c1, c2, 3, bias=False), _bn(c2)  # 'valid'
        self.entry = nn.Sequential(
            DownBlock(c2, 128, 128, relu_first=False),
            DownBlock(128, 256, 256, relu_first=True),
            DownBlock(256, MIDDLE_CHANNELS, MIDDLE_CHANNELS, relu_first=True),
        )
        self.middle = nn.Sequential(*(MiddleBlock() for _ in range(MIDDLE_BLOCKS)))
        self.block13 = DownBlock(MIDDLE_CHANNELS, MIDDLE_CHANNELS, e1, relu_first=True)
        self.sep14a = SepConvBN(e1, e2, relu_first=False)
        self.sep14b = SepConvBN(e2, e3, relu_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.block13(self.middle(self.entry(x)))
        x = F.relu(self.sep14b(self.sep14a(x)))
        return x.mean(dim=(2, 3))

    def keras_layers(self) -> list[nn.Module]:
        """The modules with weights in Keras' `model.layers` order: the order of a Keras 2 file's `layer_names`
        and the order over which Keras 3 counts `conv2d_k`, `batch_normalization_k`..."""
        blocks = [*self.entry, *self.middle, self.block13, self.sep14a, self.sep14b]
        return [self.conv1, self.bn1, self.conv2, self.bn2, *(m for b in blocks for m in b.keras_layers())]


def keras_class(module: nn.Module) -> str:
    """The snake_case Keras class a torch module stands for, as Keras 3 names its weight groups."""
    if isinstance(module, SeparableConv2d):
        return "separable_conv2d"
    if isinstance(module, nn.Conv2d):
        return "conv2d"
    if isinstance(module, nn.BatchNorm2d):
        return "batch_normalization"
    if isinstance(module, nn.Linear):
        return "dense"
    raise TypeError(f"no Keras class for {type(module).__name__}")


def load_layers(modules: Sequence[nn.Module], layers: Sequence[tuple[str, LayerWeights]], source: object) -> None:
    """Copy (name, weights) pairs into `modules` one to one, in order; any count or shape mismatch is an error."""
    if len(layers) != len(modules):
        raise WeightsFormatError(
            f"{source}: expected {len(modules)} layers with weights, got {len(layers)}"
            f" (first: {[n for n, _ in layers[:3]]})"
        )
    for (name, weights), module in zip(layers, modules):
        load_layer(module, weights, f"{source}: layer {name!r}")


def load_keras3_group(modules: Sequence[nn.Module], group: h5py.Group, source: object) -> None:
    """Load `modules` from a Keras 3 model group (its `layers/<class>_k/vars/<i>` children)."""
    classes = [keras_class(m) for m in modules]
    layers = read_keras3_layers(group, classes, str(source))
    load_layers(modules, [(f"{group.name}/{c}", w) for c, w in zip(classes, layers)], source)


def open_keras_weights(path: Path) -> h5py.File:
    """An h5py file for a Keras weight file, or for the weights inside a `.keras` zip (read into memory, since
    h5py needs random access the zip stream does not give cheaply)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if KERAS_ZIP_WEIGHTS not in z.namelist():
                raise WeightsFormatError(f"{path}: a zip without {KERAS_ZIP_WEIGHTS}, not a .keras model")
            return h5py.File(io.BytesIO(z.read(KERAS_ZIP_WEIGHTS)), "r")
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as e:
        raise WeightsFormatError(f"{path}: not an HDF5 file or .keras archive ({e})") from None


def is_keras3(f: h5py.File) -> bool:
    """Keras 3 files have a `layers` group and no Keras 2 `layer_names` attribute (root or `model_weights`)."""
    return "layers" in f and "layer_names" not in f.attrs and "model_weights" not in f


def load_xception(model: KerasXception, path: str | Path) -> KerasXception:
    """Load a bare Xception's weights: the published Keras 2 notop `.h5`, a Keras 3 `.weights.h5` of the Xception
    itself, or a `.keras` archive of it. Returns `model` for chaining."""
    path = Path(path)
    with open_keras_weights(path) as f:
        keras3 = is_keras3(f)
        if keras3:
            load_keras3_group(model.keras_layers(), f, path)
    if not keras3:
        load_layers(model.keras_layers(), split_nested(read_keras_h5(path)), path)
    return model
