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

Input: 224 x 224 RGB, ImageNet mean/std (`FeatureExtractor.get_normalizer`). See `ICPR_INPUT` in
engines/registry.py for how their `scale` face policy maps onto the project's crops.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from engines.base import TorchEngine, WeightsFormatError
from engines.weights import ChecksumMismatch, sha256_of
from engines.xception_140k import load_state_dict_file, load_weights

if TYPE_CHECKING:
    from engines.registry import ModelEntry

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

    build.__name__ = f"build_{architecture}"
    return build


build_effb4 = _builder("effb4")
build_effb4st = _builder("effb4st")
build_effb4att = _builder("effb4att")
build_effb4attst = _builder("effb4attst")


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
