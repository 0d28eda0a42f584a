"""MesoNet (Afchar et al., WIFS 2018): Meso4 and MesoInception4 in PyTorch, loading the authors' Keras 2 weights.

The layers reproduce the Keras originals exactly ("same" padding for convs and pools, BN epsilon 1e-3, Flatten
over NHWC), so the published weights give the published outputs without TensorFlow. The network's sigmoid is
p(real); the registry's LabelMapping turns it into p(fake) inside `TorchEngine`.

The head's activation between its two Dense layers follows the file, not the authors' code: Keras 2 lists every
layer, weightless ones included, in `layer_names`, and the published Meso4 files list none there while the
MesoInception files list `leaky_re_lu_1`. Measured on the shared data (`benchmarks/meso_activation.py`, README
"Notes on the models"): MesoInception without its LeakyReLU loses AUC and calibration; Meso4 ranks the same either
way, and its file's linear head gives the lower p(fake) on real faces.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engines.base import InputSpec, LabelMapping, TorchEngine, WeightsFormatError
from engines.entry import ModelEntry
from engines.keras_h5 import KERAS_BN_EPSILON, load_into, read_layer_names
from engines.quality import QualityFloor
from engines.registration import register_architecture, register_models
from engines.weights import WeightsSource

INPUT_SIZE = 256
IN_CHANNELS = 3
DROPOUT_P = 0.5
LEAKY_SLOPE = 0.1
# Keras 2 auto-names a layer after its class plus "_N"; these are the class prefixes the head may hold.
DENSE_PREFIX = "dense"
LEAKY_PREFIX = "leaky_re_lu"
DROPOUT_PREFIX = "dropout"
HIDDEN_UNITS = 16
FINAL_CHANNELS = 16
# Four stages pool by 2, 2, 2 and 4: 256 -> 8, so the head sees 8 * 8 * 16 = 1024 features.
TOTAL_DOWNSAMPLING = 2 * 2 * 2 * 4
HEAD_FEATURES = (INPUT_SIZE // TOTAL_DOWNSAMPLING) ** 2 * FINAL_CHANNELS


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same": output ceil(size/stride); the odd pixel of padding goes after (bottom/right)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class KerasMaxPool2d(nn.Module):
    """MaxPooling2D(pool_size=k, padding="same"): pads with -inf per TF's rule, which torch's ceil_mode does not."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = _same_pads(x.shape[-2], self.kernel, self.kernel)
        left, right = _same_pads(x.shape[-1], self.kernel, self.kernel)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=-math.inf)
        return F.max_pool2d(x, self.kernel)


def _conv(in_c: int, out_c: int, kernel: int, dilation: int = 1) -> nn.Conv2d:
    """Conv2D(padding="same"), stride 1: torch's "same" splits the padding like TF (the extra pixel after)."""
    return nn.Conv2d(in_c, out_c, kernel, padding="same", dilation=dilation)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPSILON)


class ConvStage(nn.Module):
    """Conv (relu) -> BN -> MaxPool, the unit both MesoNets are built of."""

    def __init__(self, in_c: int, out_c: int, kernel: int, pool: int) -> None:
        super().__init__()
        self.conv, self.bn, self.pool = _conv(in_c, out_c, kernel), _bn(out_c), KerasMaxPool2d(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn(F.relu(self.conv(x))))

    def keras_order(self) -> list[nn.Module]:
        return [self.conv, self.bn]


class Inception(nn.Module):
    """Inception(a, b, c, d): 1x1 | 1x1-3x3 | 1x1-3x3 dilation 2 | 1x1-3x3 dilation 3, each relu, concatenated."""

    DILATIONS = (1, 2, 3)  # of the 3x3 convs in branches 2, 3 and 4

    def __init__(self, in_c: int, a: int, b: int, c: int, d: int) -> None:
        super().__init__()
        self.branch1 = _conv(in_c, a, 1)
        self.reduce = nn.ModuleList(_conv(in_c, n, 1) for n in (b, c, d))
        self.spatial = nn.ModuleList(_conv(n, n, 3, dil) for n, dil in zip((b, c, d), self.DILATIONS))
        self.out_channels = a + b + c + d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [F.relu(self.branch1(x))]
        branches += [F.relu(s(F.relu(r(x)))) for r, s in zip(self.reduce, self.spatial)]
        return torch.cat(branches, dim=1)

    def keras_order(self) -> list[nn.Module]:
        """Keras 2 lists layers deepest (farthest from the output) first: the three 1x1 reductions, then branch 1
        and the three 3x3 convs, each group in creation order (the files read conv2d_2, 4, 6, 1, 3, 5, 7)."""
        return [*self.reduce, self.branch1, *self.spatial]


class InceptionStage(nn.Module):
    """Inception -> BN -> MaxPool 2."""

    POOL = 2

    def __init__(self, in_c: int, a: int, b: int, c: int, d: int) -> None:
        super().__init__()
        self.inception = Inception(in_c, a, b, c, d)
        self.bn, self.pool = _bn(self.inception.out_channels), KerasMaxPool2d(self.POOL)
        self.out_channels = self.inception.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn(self.inception(x)))

    def keras_order(self) -> list[nn.Module]:
        return [*self.inception.keras_order(), self.bn]


class MesoHead(nn.Module):
    """Flatten (over NHWC, as Keras did) -> Dropout -> Dense 16 -> [LeakyReLU] -> Dropout -> Dense 1 -> sigmoid.

    `leaky` says whether the LeakyReLU is there; without it the two Dense layers compose linearly, as in a Keras
    model that has no activation layer between them.
    """

    def __init__(self, leaky: bool = True) -> None:
        super().__init__()
        self.leaky = leaky
        self.dropout = nn.Dropout(DROPOUT_P)
        self.hidden = nn.Linear(HEAD_FEATURES, HIDDEN_UNITS)
        self.out = nn.Linear(HIDDEN_UNITS, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x.permute(0, 2, 3, 1).flatten(1))
        hidden = self.hidden(x)
        if self.leaky:
            hidden = F.leaky_relu(hidden, LEAKY_SLOPE)
        return torch.sigmoid(self.out(self.dropout(hidden)))

    def keras_order(self) -> list[nn.Module]:
        return [self.hidden, self.out]


class MesoNet(nn.Module):
    """Stages then head; maps (N, 3, 256, 256) in [0, 1] to p(real) of shape (N, 1)."""

    def __init__(self, stages: list[nn.Module], leaky: bool = True) -> None:
        super().__init__()
        self.stages = nn.Sequential(*stages)
        self.head = MesoHead(leaky)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(x))

    def keras_order(self) -> list[nn.Module]:
        """Modules with weights in the order the Keras 2 files list their layers."""
        return [m for stage in [*self.stages, self.head] for m in stage.keras_order()]


def meso4(leaky: bool = True) -> MesoNet:
    return MesoNet([
        ConvStage(IN_CHANNELS, 8, 3, 2),
        ConvStage(8, 8, 5, 2),
        ConvStage(8, 16, 5, 2),
        ConvStage(16, FINAL_CHANNELS, 5, 4),
    ], leaky)


def mesoinception4(leaky: bool = True) -> MesoNet:
    first = InceptionStage(IN_CHANNELS, 1, 4, 4, 2)
    second = InceptionStage(first.out_channels, 2, 4, 4, 2)
    return MesoNet([
        first,
        second,
        ConvStage(second.out_channels, 16, 5, 2),
        ConvStage(16, FINAL_CHANNELS, 5, 4),
    ], leaky)


def _layer_class(name: str) -> str:
    """`leaky_re_lu_1` -> `leaky_re_lu`: the Keras class prefix of an auto-named layer."""
    prefix, _, suffix = name.rpartition("_")
    return prefix if suffix.isdigit() else name


def head_layers(layer_names: list[str], source: object) -> list[str]:
    """The class prefixes of the layers between the head's two Dense layers, as the file lists them."""
    dense = [i for i, n in enumerate(layer_names) if _layer_class(n) == DENSE_PREFIX]
    if len(dense) != 2:
        raise WeightsFormatError(f"{source}: expected 2 dense layers in layer_names, got {len(dense)}")
    return [_layer_class(n) for n in layer_names[dense[0] + 1 : dense[1]]]


def file_has_leaky(layer_names: list[str], source: object) -> bool:
    """Whether the file's head has the LeakyReLU; any head layer other than Dropout and LeakyReLU is refused,
    since the engine would otherwise silently run an activation the weights were not trained with."""
    between = head_layers(layer_names, source)
    unknown = [n for n in between if n not in (LEAKY_PREFIX, DROPOUT_PREFIX)]
    if unknown or between.count(LEAKY_PREFIX) > 1:
        raise WeightsFormatError(f"{source}: unsupported layers {between} between the head's Dense layers")
    return LEAKY_PREFIX in between


def _build(arch, weights_path: Path, entry: ModelEntry, device: str | torch.device,
           leaky: bool | None) -> TorchEngine:
    """`leaky=None` follows the file's layer list; True/False force a variant (benchmarks/meso_activation.py)."""
    if leaky is None:
        leaky = file_has_leaky(read_layer_names(weights_path), weights_path)
    net = arch(leaky)
    load_into(weights_path, net.keras_order())
    return TorchEngine(entry.name, net, entry.input, entry.labels, device)


@register_architecture("meso4")
def build_meso4(weights_path: Path, entry: ModelEntry, device: str | torch.device = "cpu",
                leaky: bool | None = None) -> TorchEngine:
    return _build(meso4, weights_path, entry, device, leaky)


@register_architecture("mesoinception4")
def build_mesoinception4(weights_path: Path, entry: ModelEntry, device: str | torch.device = "cpu",
                         leaky: bool | None = None) -> TorchEngine:
    return _build(mesoinception4, weights_path, entry, device, leaky)


# ---------------------------------------------------------------- registry entries: the authors' four files

MESONET_BASE_URL = "https://raw.githubusercontent.com/DariusAf/MesoNet/master/weights/"
# MesoNet: RGB 256x256 in [0, 1]; the sigmoid is p(real) (df=0, real=1 in its training folders).
MESO_INPUT = InputSpec(size=INPUT_SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), margin=0.2)
MESO_LABELS = LabelMapping(kind="sigmoid", positive="real")
# Quality floors from `benchmarks/robustness.py` on the seven shared FF++ clips at 18 re-encodings (2026-12-01):
# real faces under 96 px get p(fake) 0.77-0.96 from the Deepfakes-trained files (93-100 % false alarms), which is
# what a 640x360 webcam gives (faces of ~66 px); above 96 px no further size helps. The Face2Face files' false
# alarms stay 0-17 % at every size, so they get only a sanity floor. No sharpness floor: sharpness tracks face
# size here, and a floor on it would also gate a third of the untouched originals.
MESO_FLOOR_SOURCE = "benchmarks/robustness.py, shared FF++ clips, 2026-12-01"
MESO_FLOORS = {"meso4-df": 96, "mesoinception-df": 96, "meso4-f2f": 64, "mesoinception-f2f": 64}
MESO_PAPER = ("Afchar et al., 'MesoNet: a Compact Facial Video Forgery Detection Network', WIFS 2018 "
              "(github.com/DariusAf/MesoNet)")
MESO_LICENCE = "Apache-2.0 (DariusAf/MesoNet)"


def _meso(name: str, arch: str, filename: str, sha256: str, trained_on: str) -> ModelEntry:
    return ModelEntry(
        quality=QualityFloor(min_face_px=MESO_FLOORS[name], source=MESO_FLOOR_SOURCE),
        name=name,
        architecture=arch,
        description=f"MesoNet {arch} (Afchar et al. 2018) trained on {trained_on}",
        weights=WeightsSource(filename=filename, url=MESONET_BASE_URL + filename, sha256=sha256),
        input=MESO_INPUT,
        labels=MESO_LABELS,
        paper=MESO_PAPER,
        trained_on=trained_on,
        licence=MESO_LICENCE,
        backends=("torch", "onnx", "int8"),
    )


register_models(
    _meso("meso4-df", "meso4", "Meso4_DF.h5",
          "036ed30d04ffd9c7506f825b97c86aa64915f5818931da96817b169aad790af5", "the authors' Deepfake videos"),
    _meso("meso4-f2f", "meso4", "Meso4_F2F.h5",
          "bcfda015d217b9f8d6557693edbdf9f4e79cfd22672541968dd0e2954462b5d7", "FaceForensics Face2Face"),
    _meso("mesoinception-df", "mesoinception4", "MesoInception_DF.h5",
          "234586d40058e76ef8b6f27ca4b63c06e31c2a5a69c0d8ba6f30b1468ab7bafa", "the authors' Deepfake videos"),
    _meso("mesoinception-f2f", "mesoinception4", "MesoInception_F2F.h5",
          "d4533ac8a3197dc35c47405d23d99e888c1d0135e267e03540c7451feaccff3f", "FaceForensics Face2Face"),
)
