"""VideoMAE clip classifier (card 001): transformers' `VideoMAEForVideoClassification` fine-tuned real/fake.

The authors fine-tuned the Kinetics-400 VideoMAE with a 2-way head and publish no hub id, so the weights are a
Hugging Face checkpoint folder (config.json + model.safetensors or pytorch_model.bin) passed with `--weights`;
a hub id ("owner/name") is fetched with `huggingface_hub` when the network allows. Everything the engine needs
comes from that checkpoint rather than from the registry: clip length and size from config.json (the position
table is fixed to them), which output is "fake" from config.id2label (the head's order is whatever the training
folders gave), and mean/std from preprocessor_config.json. Preprocessing is `engines.base.normalise`, equal to
`VideoMAEImageProcessor` on crops already at the model's size (its resize and centre crop are then identities).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from engines.base import InputSpec, LabelMapping, TorchEngine, WeightsFormatError
from engines.entry import ModelEntry
from engines.registration import register_architecture, register_models
from engines.weights import WeightsSource, WeightsUnavailable

CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)
# What a hub snapshot needs; skips tokenizer files, training logs and alternative formats (tf, flax, onnx).
HUB_PATTERNS = [CONFIG_FILE, PROCESSOR_FILE, "model.safetensors*", "pytorch_model.bin*"]
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# Label names (compared lower-cased, whole name) that mean the manipulated class.
FAKE_LABELS = frozenset({"fake", "deepfake", "manipulated"})
# The Kinetics-400 VideoMAE checkpoints normalise with the ImageNet statistics; used when the folder has no
# preprocessor_config.json (the processor class's own default, 0.5/0.5, is not what those checkpoints use).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VideoMAELogits(nn.Module):
    """(N, T, 3, H, W) normalised clips -> (N, num_labels) logits; unwraps the HF output for TorchEngine/ONNX."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=True).logits


def fake_index(id2label: dict[int, str]) -> int:
    """The output index whose label name means fake; refuses a config with none or several such labels."""
    hits = [int(i) for i, name in id2label.items() if str(name).strip().lower() in FAKE_LABELS]
    if len(hits) != 1:
        problem = "no label" if not hits else "more than one label"
        raise WeightsFormatError(
            f"config.json id2label {dict(id2label)} has {problem} named one of {sorted(FAKE_LABELS)} "
            "(case-insensitive), so p(fake) cannot be read from it; set id2label in config.json."
        )
    return hits[0]


def resolve_checkpoint(source: Path | str) -> Path:
    """A local checkpoint folder for `source`: the folder itself, or a hub id's snapshot (downloaded if needed)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or not HUB_ID.match(str(source)):
        raise WeightsUnavailable(
            f"VideoMAE weights must be a Hugging Face checkpoint folder ({CONFIG_FILE} + {WEIGHT_FILES[0]} or "
            f"{WEIGHT_FILES[2]}) or a hub id 'owner/name'; {source} is neither. Pass the folder with --weights."
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(source), allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # offline, unknown repo, gated repo...: all mean "not available here"
        raise WeightsUnavailable(
            f"could not fetch VideoMAE checkpoint {source} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Download the repository and pass its folder with --weights."
        ) from exc


def _normalisation(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std from the checkpoint's preprocessor_config.json, else the Kinetics VideoMAE (ImageNet) ones."""
    file = folder / PROCESSOR_FILE
    if not file.is_file():
        return IMAGENET_MEAN, IMAGENET_STD
    cfg = json.loads(file.read_text())
    return tuple(cfg.get("image_mean", IMAGENET_MEAN)), tuple(cfg.get("image_std", IMAGENET_STD))


def load_videomae(folder: Path) -> nn.Module:
    """Load the checkpoint strictly: a missing or misshapen tensor is an error, never a random initialisation."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    if not (folder / CONFIG_FILE).is_file() or not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise WeightsFormatError(
            f"{folder} is not a complete Hugging Face checkpoint: it needs {CONFIG_FILE} and one of "
            f"{', '.join(WEIGHT_FILES)}."
        )
    try:
        config = VideoMAEConfig.from_pretrained(folder, local_files_only=True)
        model, info = VideoMAEForVideoClassification.from_pretrained(
            folder, config=config, local_files_only=True, output_loading_info=True
        )
    except Exception as exc:  # truncated safetensors, bad JSON, wrong shapes...: all mean a corrupt checkpoint
        raise WeightsFormatError(f"{folder}: cannot load as VideoMAE ({type(exc).__name__}: {exc})") from exc
    bad = {k: sorted(map(str, info[k])) for k in ("missing_keys", "mismatched_keys") if info.get(k)}
    if bad:
        raise WeightsFormatError(f"{folder}: weights do not match the VideoMAE in {CONFIG_FILE}: {bad}")
    return model.float().eval()


@register_architecture("videomae")
def build_videomae(weights_path: Path, entry: ModelEntry, device: str | torch.device = "cpu") -> TorchEngine:
    """Engine from a checkpoint folder or hub id; size, clip length and labels come from the checkpoint."""
    folder = resolve_checkpoint(weights_path)
    model = load_videomae(folder)
    config = model.config
    if config.num_labels < 2:
        raise WeightsFormatError(f"{folder}: expected a softmax head with >= 2 labels, got {config.num_labels}")
    labels = LabelMapping(kind="softmax", fake_index=fake_index(config.id2label), logits=True)
    mean, std = _normalisation(folder)
    spec = InputSpec(size=config.image_size, frames=config.num_frames, mean=mean, std=std, margin=entry.input.margin)
    return TorchEngine(entry.name, VideoMAELogits(model), spec, labels, device)


register_models(
    ModelEntry(
        name="videomae",
        architecture="videomae",
        card="001",
        description="VideoMAE (Tong et al. 2022) from Kinetics-400, fine-tuned real/fake on FF++ 16-frame clips",
        # The card names no hub repo: the authors' HF checkpoint folder (or a hub id) comes with --weights.
        weights=WeightsSource(
            filename="videomae-ffpp", hf_repo=None, sha256=None,
            hint="Card 001 publishes no download: pass the authors' Hugging Face checkpoint folder "
                 "(config.json + model.safetensors) or its hub id with --weights.",
        ),
        # Defaults only: the engine takes size and clip length from config.json, mean/std from
        # preprocessor_config.json, and the fake index from config.id2label.
        input=InputSpec(size=224, frames=16, mean=IMAGENET_MEAN, std=IMAGENET_STD),
        labels=LabelMapping(kind="softmax", fake_index=1, logits=True),
        trained_on="FaceForensics++ (card 001)",
        licence="not stated by card 001",
        backends=("torch", "onnx"),
    ),
)
