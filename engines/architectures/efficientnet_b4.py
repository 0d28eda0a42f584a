"""The ICPR 2020 EfficientNet-B4 family (Bonettini et al., "Video Face Manipulation Detection Through Ensemble of
CNNs", repository polimi-ispl/icpr2020dfdc): EfficientNetB4, EfficientNetB4ST, EfficientNetAutoAttB4 and
EfficientNetAutoAttB4ST, each published trained on DFDC and on FF++, plus their mean-fusion ensemble.

The published `.pth` files are bare state dicts of the authors' `architectures/fornet.py` modules, whose backbone is
`efficientnet_pytorch`'s `EfficientNet` ('efficientnet-b4'). This module builds the same network on the same
package, so every published file loads unchanged with strict=True. The layouts (key prefixes) it mirrors:

- EfficientNetB4: `efficientnet.*` (EfficientNet-B4 without its ImageNet `_fc`) + `classifier.{weight,bias}`,
  a Linear(1792 -> 1) on the average-pooled final feature map (the dropout before it is inactive in eval).
- EfficientNetAutoAttB4: the same, plus `efficientnet.attconv.{weight,bias}`, a 1x1 Conv(56 -> 1) read after
  MBConv block 9 (the last 56-channel block); sigmoid(attconv(x)) multiplies that block's output, then the
  remaining blocks run as usual.
- *ST ("siamese tuning"): `feat_ext.*` holds one of the two networks above (its own `feat_ext.classifier` is in the
  file but unused) and `classifier.0.*` (BatchNorm1d(1792)) + `classifier.1.*` (Linear(1792 -> 1)) is the head.

`efficientnet_pytorch` builds B4 for its native 380 px input, so its "same" paddings are static ZeroPad2d layers
sized for 380; the authors trained at 224 with exactly that module, and so does this one (same padding, same
outputs). Its memory-efficient Swish (a custom autograd Function) is swapped for the plain x * sigmoid(x), which
is numerically the same and exports to ONNX.

Output: one logit per face, sigmoid = p(fake) (their training labels are 1 = fake, BCEWithLogitsLoss).
The ensemble averages the members' logits then applies the sigmoid, as the paper's fusion notebook does
(`expit(mean(scores))`); that is plain, uncalibrated mean fusion.

Input: 224 x 224 RGB, ImageNet mean/std (`FeatureExtractor.get_normalizer`). See `ICPR_INPUT` below for how their
`scale` face policy maps onto the project's crops.

The network reads efficientnet_pytorch's private parts (`_blocks`, `_swish`, ...); `engines.efficientnet_compat`
checks them on every build against the version they were read from, and pyproject.toml bounds the package.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from engines import efficientnet_compat
from engines.base import InputSpec, LabelMapping, TorchEngine, WeightsFormatError
from engines.entry import ModelEntry
from engines.loading import load_state_dict_file, load_weights
from engines.registration import register_architecture, register_models
from engines.weights import ChecksumMismatch, WeightsSource, sha256_of

MODEL_NAME = "efficientnet-b4"
FEATURES = 1792  # channels of B4's head conv = the pooled feature size
ATT_BLOCK = 9  # MBConv block after which the attention map is computed (its output has ATT_CHANNELS channels)
ATT_CHANNELS = 56
# Published file names carry the file's full sha256: NET_DATASET_bestval-<sha256>.pth (what torch.hub's
# load_url(check_hash=True) checks in the authors' notebooks).
HASHED_NAME = re.compile(r"_bestval-([0-9a-f]{64})\.pth$")


def _efficientnet_b4(attention: bool) -> nn.Module:
    """efficientnet_pytorch's B4 (random init, no download), without `_fc`, with the attention conv if asked."""
    from efficientnet_pytorch import EfficientNet

    net = EfficientNet.from_name(MODEL_NAME)
    efficientnet_compat.check(net)
    net.set_swish(memory_efficient=False)
    del net._fc
    if attention:
        net.attconv = nn.Conv2d(ATT_CHANNELS, 1, kernel_size=1)
    return net


class EfficientNetB4(nn.Module):
    """B4 features -> global average pool -> Linear(1792, 1); with `attention`, the AutoAtt variant."""

    def __init__(self, attention: bool = False) -> None:
        super().__init__()
        self.attention = attention
        self.efficientnet = _efficientnet_b4(attention)
        self.classifier = nn.Linear(FEATURES, 1)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The AutoAtt map (N, 1, h, w) in [0, 1] at block ATT_BLOCK's resolution (1/8 of the input)."""
        if not self.attention:
            raise ValueError("this network has no attention branch")
        return self._blocks(x, stop_at_attention=True)

    def _blocks(self, x: torch.Tensor, stop_at_attention: bool = False) -> torch.Tensor:
        net = self.efficientnet
        x = net._swish(net._bn0(net._conv_stem(x)))
        rate, count = net._global_params.drop_connect_rate, len(net._blocks)
        for idx, block in enumerate(net._blocks):
            # The per-block drop-connect rate efficientnet_pytorch uses; it only acts in training mode.
            x = block(x, drop_connect_rate=rate * idx / count if rate else rate)
            if self.attention and idx == ATT_BLOCK:
                att = torch.sigmoid(net.attconv(x))
                if stop_at_attention:
                    return att
                x = x * att
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        net = self.efficientnet
        x = net._swish(net._bn1(net._conv_head(self._blocks(x))))
        return torch.flatten(net._avg_pooling(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.efficientnet._dropout(self.features(x)))


class SiameseTuned(nn.Module):
    """The *ST networks: a (frozen, during their tuning) B4 / AutoAttB4 feature extractor + BatchNorm1d + Linear."""

    def __init__(self, attention: bool = False) -> None:
        super().__init__()
        self.feat_ext = EfficientNetB4(attention)
        self.classifier = nn.Sequential(nn.BatchNorm1d(FEATURES), nn.Linear(FEATURES, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feat_ext.features(x))


class EfficientNetAutoAttB4(EfficientNetB4):
    def __init__(self) -> None:
        super().__init__(attention=True)


class EfficientNetB4ST(SiameseTuned):
    def __init__(self) -> None:
        super().__init__(attention=False)


class EfficientNetAutoAttB4ST(SiameseTuned):
    def __init__(self) -> None:
        super().__init__(attention=True)


# Registry architecture name -> module class (the authors' class names).
NETWORKS: dict[str, type[nn.Module]] = {
    "effb4": EfficientNetB4,
    "effb4st": EfficientNetB4ST,
    "effb4att": EfficientNetAutoAttB4,
    "effb4attst": EfficientNetAutoAttB4ST,
}


class MeanLogitEnsemble(nn.Module):
    """Members' logits averaged: (N, 3, H, W) -> (N, 1). One module, so it exports to ONNX as one graph."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members], dim=0).mean(dim=0)


def check_name_hash(path: Path) -> None:
    """A file named like a published one (`..._bestval-<sha256>.pth`) must have that sha256: refuses tampered or
    truncated copies passed with --weights before torch even reads them."""
    match = HASHED_NAME.search(Path(path).name)
    if match is None:
        return
    actual = sha256_of(path)
    if actual != match.group(1):
        raise ChecksumMismatch(
            f"{path}: sha256 is {actual}, but the file name says {match.group(1)} (the published file's hash). "
            "The file is truncated or altered: download it again."
        )


def load_network(architecture: str, path: Path) -> nn.Module:
    """The named network with the file's weights, strictly loaded; every mismatch named in one error."""
    if architecture not in NETWORKS:
        raise ValueError(f"unknown ICPR network {architecture!r}; known: {', '.join(NETWORKS)}")
    path = Path(path)
    if path.is_dir():
        raise WeightsFormatError(f"{path}: is a folder; the ICPR networks load one .pth state dict file")
    check_name_hash(path)
    module = NETWORKS[architecture]()
    load_weights(module, load_state_dict_file(path), path)
    return module.eval()


def _builder(architecture: str):
    def build(weights_path: Path, entry: ModelEntry, device: str | torch.device = "cpu") -> TorchEngine:
        return TorchEngine(entry.name, load_network(architecture, weights_path), entry.input, entry.labels, device)

    build.__name__ = build.__qualname__ = f"build_{architecture}"
    return register_architecture(architecture)(build)


BUILDERS = {architecture: _builder(architecture) for architecture in NETWORKS}  # registered as they are made


@register_architecture("effb4_ensemble")
def build_ensemble(
    weights_path: Path, entry: ModelEntry, device: str | torch.device = "cpu", extra_paths: dict[str, Path] | None = None
) -> TorchEngine:
    """Registry builder for an ensemble entry: `weights` is the first member's file, `extra_weights` the others,
    each role named after its member's architecture (effb4, effb4st, effb4att, effb4attst)."""
    roles = dict(extra_paths or {})
    first = next(iter(a for a in NETWORKS if a not in roles), None)
    if first is None:
        raise ValueError(f"{entry.name}: ensemble has no member for its main weights file")
    files = {first: Path(weights_path), **roles}
    members = [load_network(arch, files[arch]) for arch in NETWORKS if arch in files]
    return TorchEngine(entry.name, MeanLogitEnsemble(members), entry.input, entry.labels, device)


# ---------------------------------------------------------------- registry entries: the authors' published files

ICPR_BASE_URL = "https://f002.backblazeb2.com/file/icpr2020/"
ICPR_PAPER = ("Bonettini et al., 'Video Face Manipulation Detection Through Ensemble of CNNs', ICPR 2020 "
              "(github.com/polimi-ispl/icpr2020dfdc)")
ICPR_LICENCE = "GPL-3.0 (the authors' repository, which publishes the weights)"
ICPR_DATASETS = ("dfdc", "ffpp")
ICPR_TRAINED_ON = {"dfdc": "DFDC (Deepfake Detection Challenge) training set",
                   "ffpp": "FaceForensics++ c23 (all four manipulations + originals)"}
# The published files, as listed in the authors' architectures/weights.py; each name carries its sha256.
ICPR_FILES = {
    ("effb4", "dfdc"): "EfficientNetB4_DFDC_bestval-c9f3663e2116d3356d056a0ce6453e0fc412a8df68ebd0902f07104d9129a09a.pth",
    ("effb4", "ffpp"): "EfficientNetB4_FFPP_bestval-93aaad84946829e793d1a67ed7e0309b535e2f2395acb4f8d16b92c0616ba8d7.pth",
    ("effb4st", "dfdc"): "EfficientNetB4ST_DFDC_bestval-86f0a0701b18694dfb5e7837bd09fa8e48a5146c193227edccf59f1b038181c6.pth",
    ("effb4st", "ffpp"): "EfficientNetB4ST_FFPP_bestval-ccd016668071be5bf5fff68e446d055441739ec7113fb1a6eee998f08396ae92.pth",
    ("effb4att", "dfdc"):
        "EfficientNetAutoAttB4_DFDC_bestval-72ed969b2a395fffe11a0d5bf0a635e7260ba2588c28683630d97ff7153389fc.pth",
    ("effb4att", "ffpp"):
        "EfficientNetAutoAttB4_FFPP_bestval-b0c9e9522a7143cf119843e910234be5e30f77dc527b1b427cdffa5ce3bdbc25.pth",
    ("effb4attst", "dfdc"):
        "EfficientNetAutoAttB4ST_DFDC_bestval-4df0ef7d2f380a5955affa78c35d0942ac1cd65229510353b252737775515a33.pth",
    ("effb4attst", "ffpp"):
        "EfficientNetAutoAttB4ST_FFPP_bestval-ddb357503b9b902e1b925c2550415604c4252b9b9ecafeb7369dc58cc16e9edd.pth",
}
ICPR_NETWORK_NAMES = {"effb4": "EfficientNetB4", "effb4st": "EfficientNetB4ST", "effb4att": "EfficientNetAutoAttB4",
                      "effb4attst": "EfficientNetAutoAttB4ST"}
# Their `scale` face policy, mapped onto the project's square crops (stream/live/faces/crop.py):
# BlazeFace's box is grown by 0.2 x its height on the left, right and bottom and 0.4 x on top, then cut as a
# square as large as the grown box's longer side around its centre, then resized to 224 (PIL bilinear). For a face
# box taller than wide (the usual case) that square's side is 1.6 x the box height, i.e. margin 0.3 on each side
# here, and the same bilinear resize. Not reproduced: (1) their square sits 0.1 x box height higher (the extra top
# margin), (2) at the frame's edge they clip the square (then stretch it to 224) where crop_faces pads with black,
# (3) MTCNN's boxes, which this project detects with, are not BlazeFace's. A crop mode with a vertical offset and
# edge clipping would close (1) and (2); it belongs in stream/live/faces/crop.py.
ICPR_INPUT = InputSpec(size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), margin=0.3)
ICPR_LABELS = LabelMapping(kind="sigmoid", positive="fake", logits=True)  # one logit, label 1 = fake
# TensorRT fp16 is built by benchmarks/gpu_check.sh on a CUDA machine; it joins this list once that has run.
ICPR_BACKENDS = ("torch", "onnx", "int8")


def icpr_source(arch: str, dataset: str) -> WeightsSource:
    filename = ICPR_FILES[(arch, dataset)]
    sha = filename.rsplit("-", 1)[1].removesuffix(".pth")
    return WeightsSource(filename=filename, url=ICPR_BASE_URL + filename, sha256=sha)


def _icpr(arch: str, dataset: str) -> ModelEntry:
    network = ICPR_NETWORK_NAMES[arch]
    return ModelEntry(
        name=f"{arch}-{dataset}",
        architecture=arch,
        description=f"{network} (ICPR 2020), 224^2 face crops, one logit (sigmoid = p(fake)), trained on "
                    f"{dataset.upper()}",
        weights=icpr_source(arch, dataset),
        input=ICPR_INPUT,
        labels=ICPR_LABELS,
        paper=ICPR_PAPER,
        trained_on=ICPR_TRAINED_ON[dataset],
        licence=ICPR_LICENCE,
        backends=ICPR_BACKENDS,
    )


def _icpr_ensemble(dataset: str) -> ModelEntry:
    """The paper's headline: B4 + B4ST + AutoAttB4 + AutoAttB4ST, logits averaged then sigmoid (plain mean)."""
    return ModelEntry(
        name=f"effb4-ensemble-{dataset}",
        architecture="effb4_ensemble",
        description="ICPR 2020 ensemble of EfficientNetB4, B4ST, AutoAttB4 and AutoAttB4ST: mean of the four "
                    f"logits, then sigmoid (plain mean fusion, uncalibrated); trained on {dataset.upper()}",
        weights=icpr_source("effb4", dataset),
        extra_weights={arch: icpr_source(arch, dataset) for arch in ("effb4st", "effb4att", "effb4attst")},
        input=ICPR_INPUT,
        labels=ICPR_LABELS,
        paper=ICPR_PAPER,
        trained_on=ICPR_TRAINED_ON[dataset],
        licence=ICPR_LICENCE,
        backends=ICPR_BACKENDS,
    )


register_models(
    *(_icpr(arch, dataset) for arch in ICPR_NETWORK_NAMES for dataset in ICPR_DATASETS),
    *(_icpr_ensemble(dataset) for dataset in ICPR_DATASETS),
)
