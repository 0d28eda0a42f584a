"""Xception (Chollet 2017) trained from scratch on "140k Real and Fake Faces" (seed card 003).

The published checkpoint `best_xception.pth` (HF hub `RamadhanZome/deepfake-xception`) is a plain PyTorch state
dict of the author's own from-scratch Xception, not timm's or Cadene's: module names (`layers`, `shortcut`,
`middle_flow`, `sepconv1`...) and the shortcut on every block, the stride-1 middle ones included, follow that
code, so the file loads unchanged with strict=True. Output is a 2-way logit, index 0 = fake, 1 = real.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engines.base import InputSpec, LabelMapping, TorchEngine
from engines.entry import ModelEntry
from engines.loading import load_state_dict_file, load_weights
from engines.registration import register_architecture, register_models
from engines.weights import WeightsSource

NUM_CLASSES = 2
STEM_CHANNELS = (32, 64)
ENTRY_CHANNELS = 728
MIDDLE_BLOCKS = 8
MIDDLE_REPS = 3
EXIT_CHANNELS = (1024, 1536, 2048)
EXPECTED_STATE_KEYS = 324  # the published file's key count, BN buffers (num_batches_tracked) included


class SeparableConv2d(nn.Module):
    """3x3 depthwise conv then 1x1 pointwise conv, both bias-free (a BatchNorm follows)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class Block(nn.Module):
    """Residual block: `reps` x (ReLU, SeparableConv, BN), optional max-pool, plus a 1x1 conv+BN shortcut.

    ReLUs are not in-place: the block's first ReLU would otherwise overwrite the input the shortcut reads.
    """

    def __init__(self, in_ch: int, out_ch: int, reps: int, stride: int, start_relu: bool, pool: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(reps):
            self.layers.append(nn.ReLU() if i > 0 or start_relu else nn.Identity())
            self.layers.append(SeparableConv2d(in_ch if i == 0 else out_ch, out_ch))
            self.layers.append(nn.BatchNorm2d(out_ch))
        if pool:
            self.layers.append(nn.MaxPool2d(3, stride, padding=1))
        self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.layers:
            out = layer(out)
        return out + self.shortcut(x)


class Xception140k(nn.Module):
    """Entry flow (stem + 3 pooling blocks), 8 middle blocks at 728 channels, exit flow, 2-way linear head."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        c1, c2 = STEM_CHANNELS
        e1, e2, e3 = EXIT_CHANNELS
        self.conv1 = nn.Conv2d(3, c1, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.relu = nn.ReLU(inplace=True)
        self.block1 = Block(c2, 128, 2, 2, start_relu=False, pool=True)
        self.block2 = Block(128, 256, 2, 2, start_relu=True, pool=True)
        self.block3 = Block(256, ENTRY_CHANNELS, 2, 2, start_relu=True, pool=True)
        self.middle_flow = nn.Sequential(
            *(Block(ENTRY_CHANNELS, ENTRY_CHANNELS, MIDDLE_REPS, 1, start_relu=True, pool=False)
              for _ in range(MIDDLE_BLOCKS))
        )
        self.block4 = Block(ENTRY_CHANNELS, e1, 2, 2, start_relu=True, pool=True)
        self.sepconv1 = SeparableConv2d(e1, e2)
        self.bn3 = nn.BatchNorm2d(e2)
        self.sepconv2 = SeparableConv2d(e2, e3)
        self.bn4 = nn.BatchNorm2d(e3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(e3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.block4(self.middle_flow(self.block3(self.block2(self.block1(x)))))
        x = self.relu(self.bn3(self.sepconv1(x)))
        x = self.relu(self.bn4(self.sepconv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_architecture("xception_140k")
def build_xception_140k(weights_path: Path, entry: ModelEntry, device: str | torch.device = "cpu") -> TorchEngine:
    """Registry builder: the module with the file's weights, wrapped with the entry's input spec and labels."""
    model = Xception140k()
    load_weights(model, load_state_dict_file(weights_path), weights_path)
    return TorchEngine(entry.name, model, entry.input, entry.labels, device)


register_models(
    ModelEntry(
        name="xception-140k",
        architecture="xception_140k",
        card="003",
        description="Xception (Chollet 2017) trained from scratch on 140k Real and Fake Faces (StyleGAN fakes)",
        # sha256 not published and the hub is unreachable here: unverified until someone records it.
        weights=WeightsSource(filename="best_xception.pth", hf_repo="RamadhanZome/deepfake-xception", sha256=None),
        # RGB 299x299 scaled to [-1, 1]; 2-way logits, index 0 = fake, 1 = real.
        input=InputSpec(size=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        labels=LabelMapping(kind="softmax", fake_index=0, logits=True),
        trained_on="140k Real and Fake Faces (FFHQ real, StyleGAN fake; Kaggle xhlulu)",
        licence="MIT (card 003)",
        backends=("torch", "onnx", "int8"),
    ),
)
