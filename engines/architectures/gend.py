"""GenD (Yermakov et al., "Deepfake Detection that Generalizes Across Benchmarks", WACV 2026; MIT; yermandy/GenD).

A foundation vision encoder of which only the LayerNorms were fine-tuned, its pooled feature L2-normalised
(head "LinearNorm"; "linear" skips the normalisation), then a Linear(features -> 2) head: index 0 = real,
1 = fake (their dataset code labels every source but "real" as 1; their app reads softmax[1] as p(fake)).

The published Hugging Face checkpoints (yermandy/GenD_CLIP_L_14, GenD_PE_L, GenD_DINOv3_L) are folders saved with
`save_pretrained` by the authors' `src/hf/modeling_gend.py`: `config.json` ({"model_type": "GenD", "backbone": ...,
"head": ...}) + `model.safetensors`. This module rebuilds the same module tree, so the file loads strictly, with
the key layout of that code:

- CLIP (backbone id contains "clip", built by transformers): `feature_extractor.vision_model.*` (CLIP's vision
  transformer), `feature_extractor.visual_projection.weight` (kept by their wrapper, unused), feature =
  `pooler_output` (post-LayerNorm CLS token).
- DINOv3 ("dino", transformers `AutoModel`): `feature_extractor.backbone.*`, feature = `last_hidden_state[:, 0]`.
- Perception Encoder ("vit_pe", timm Eva with `dynamic_img_size=True`, head replaced by Identity):
  `feature_extractor.backbone.*`, feature = the model's pooled output. Needs timm (and so a working torchvision).
- Head: `model.linear.{weight,bias}`.

Unlike their code, nothing downloads the backbone's own pretrained weights (GenD's file holds every tensor): only
the backbone's config is needed, resolved like transformers does from a local folder or a hub id, then from the
local Hugging Face cache when offline; a folder whose config.json names a local backbone folder loads with no
network at all.

Preprocessing is the encoder's own processor config: CLIP's / DINOv3's `preprocessor_config.json` (mean, std,
crop size), timm's data config for PE at 224 px (GenD's HF wrapper sets input_size 224). On crops already cut at
that size their resize and centre crop are identities, so `engines.base.normalise` is the whole preprocessing.
Their faces are aligned on 5 landmarks with scale 1.3 (15% context on each side): the project's square crop with
margin 0.15 is the closest unaligned equivalent (no rotation; box- rather than landmark-centred).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engines.base import InputSpec, LabelMapping, TorchEngine, WeightsFormatError
from engines.entry import ModelEntry
from engines.loading import load_weights
from engines.registration import register_architecture, register_models
from engines.weights import WeightsSource, WeightsUnavailable

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PROCESSOR_FILE = "preprocessor_config.json"
BACKBONE_FILES = [CONFIG_FILE, PROCESSOR_FILE]
HEADS = {"linear": False, "LinearNorm": True}  # head name -> L2-normalise the feature first
NUM_CLASSES = 2
FAKE_INDEX = 1
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
PE_INPUT_SIZE = 224  # GenD's HF PerceptionEncoder forces data_config["input_size"] = (3, 224, 224)
# Crop margin approximating their 1.3x landmark-aligned crops (see the module docstring).
GEND_MARGIN = 0.15
# transformers' CLIPImageProcessor defaults, for a backbone folder without preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def backbone_kind(backbone: str) -> str:
    """Which encoder family a backbone id means, by the authors' rule (substring of the lower-cased id)."""
    low = backbone.lower()
    for key, kind in (("clip", "clip"), ("vit_pe", "pe"), ("dino", "dino")):
        if key in low:
            return kind
    raise WeightsFormatError(f"unknown GenD backbone {backbone!r}: expected a CLIP, DINO or timm vit_pe_* encoder")


class CLIPFeatures(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        from transformers import CLIPVisionModel

        # transformers 5: CLIPModel.vision_model is a CLIPVisionModel; its keys (embeddings.*, encoder.*, ...) are
        # those of transformers 4's CLIPVisionTransformer, which the published file was saved from.
        self.vision_model = CLIPVisionModel(config)
        self.visual_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.features_dim = config.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values=x).pooler_output


class DINOFeatures(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        from transformers import AutoModel

        self.backbone = AutoModel.from_config(config)
        self.features_dim = config.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values=x).last_hidden_state[:, 0]


class PEFeatures(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        timm = import_timm()
        self.backbone = timm.create_model(name, pretrained=False, dynamic_img_size=True)
        self.backbone.head = nn.Identity()
        self.features_dim = self.backbone.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


class GenDNetwork(nn.Module):
    """feature_extractor -> (L2-normalise) -> model.linear: normalised (N, 3, H, W) -> (N, 2) logits."""

    def __init__(self, feature_extractor: nn.Module, normalize: bool) -> None:
        super().__init__()
        self.feature_extractor = feature_extractor
        self.model = nn.Module()
        self.model.linear = nn.Linear(feature_extractor.features_dim, NUM_CLASSES)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.feature_extractor(x)
        if self.normalize:
            f = F.normalize(f, p=2, dim=1)
        return self.model.linear(f)


def import_timm():
    try:
        import timm
    except Exception as exc:  # ImportError, or torchvision's RuntimeError beside a torch it was not built for
        raise WeightsUnavailable(
            f"GenD's Perception Encoder is built by timm, which cannot be imported here ({type(exc).__name__}: "
            f"{exc}). Install timm with a torchvision that matches this torch (pip install 'dfstream[pe]')."
        ) from None
    return timm


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise WeightsFormatError(f"{path}: not a readable {what} ({exc})") from None


def checkpoint_folder(path: Path) -> Path:
    """The GenD folder for `path`: the folder itself, or the folder of its model.safetensors."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if not path.exists():
        raise WeightsUnavailable(f"GenD weights {path} not found")
    if missing:
        raise WeightsFormatError(
            f"{folder}: a GenD checkpoint folder needs {CONFIG_FILE} + {WEIGHTS_FILE} (as save_pretrained writes "
            f"them); missing: {', '.join(missing)}"
        )
    return folder


def resolve_backbone(backbone: str, allow_download: bool = True) -> Path:
    """A local folder holding the backbone's config.json (and preprocessor_config.json if it has one).

    As transformers resolves a `from_pretrained` name: an existing local folder, else a hub id looked up in the
    local Hugging Face cache first and downloaded (config files only) if the network allows.
    """
    folder = Path(backbone).expanduser()
    if folder.is_dir():
        if not (folder / CONFIG_FILE).is_file():
            raise WeightsUnavailable(f"GenD backbone folder {folder} has no {CONFIG_FILE}")
        return folder
    if not HUB_ID.match(backbone):
        raise WeightsUnavailable(f"GenD backbone {backbone!r} is neither a local folder nor a hub id 'owner/name'")
    from huggingface_hub import snapshot_download

    errors = []
    for local_only in (True, False) if allow_download else (True,):
        try:
            found = Path(snapshot_download(repo_id=backbone, allow_patterns=BACKBONE_FILES, local_files_only=local_only))
        except Exception as exc:  # LocalEntryNotFoundError, network errors, gated repos...
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        if (found / CONFIG_FILE).is_file():
            return found
        errors.append(f"{CONFIG_FILE} not in the snapshot")
    raise WeightsUnavailable(
        f"the config of GenD's backbone {backbone} is not in the local Hugging Face cache and could not be "
        f"downloaded ({'; '.join(errors)}). Download it (`hf download {backbone} {' '.join(BACKBONE_FILES)}`; "
        "DINOv3 repos are gated: accept Meta's licence first), or set \"backbone\" in the GenD config.json to a "
        "local folder holding those files."
    )


def backbone_config(folder: Path):
    """The vision config of a backbone folder: CLIP's `vision_config` (with its projection_dim), or the model's."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder))
    if getattr(config, "model_type", None) == "clip":
        vision = config.vision_config
        vision.projection_dim = config.projection_dim
        return vision
    return config


def processor_spec(folder: Path | None, kind: str, default_size: int) -> InputSpec:
    """Size, mean and std from the backbone's preprocessor_config.json (the encoder's own processor)."""
    mean, std = (CLIP_MEAN, CLIP_STD) if kind == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    size = default_size
    path = folder / PROCESSOR_FILE if folder is not None else None
    if path is not None and path.is_file():
        cfg = read_json(path, "preprocessor config")
        mean = tuple(cfg.get("image_mean", mean))
        std = tuple(cfg.get("image_std", std))
        crop = cfg.get("crop_size") if cfg.get("do_center_crop", kind == "clip") else None
        box = crop or cfg.get("size") or {}
        if isinstance(box, int):
            size = box
        else:
            size = box.get("height") or box.get("shortest_edge") or size
    return InputSpec(size=int(size), mean=mean, std=std, margin=GEND_MARGIN)


# transformers 5 keeps DINOv3ViTModel's blocks under `model.layer.*` but reads and writes checkpoints in the
# original `layer.*` layout (its key-conversion mapping); files saved by transformers 4.5x (the published ones) have
# `layer.*` too. (file prefix, module prefix), applied only when the module has the target prefix.
KEY_RENAMES = (("feature_extractor.backbone.layer.", "feature_extractor.backbone.model.layer."),)


def rename_keys(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    for old, new in KEY_RENAMES:
        if any(k.startswith(new) for k in expected) and not any(k.startswith(new) for k in state):
            state = {new + k.removeprefix(old) if k.startswith(old) else k: v for k, v in state.items()}
    return state


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # SafetensorError for truncated or non-safetensors files
        raise WeightsFormatError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def load_gend(path: Path, allow_download: bool = True) -> tuple[GenDNetwork, InputSpec]:
    """The GenD network of a checkpoint folder (or its model.safetensors) and its input spec."""
    folder = checkpoint_folder(path)
    cfg = read_json(folder / CONFIG_FILE, "GenD config.json")
    if cfg.get("model_type") != "GenD" or "backbone" not in cfg:
        raise WeightsFormatError(
            f"{folder / CONFIG_FILE}: not a GenD config (expected model_type 'GenD' and a 'backbone'; got "
            f"model_type {cfg.get('model_type')!r})"
        )
    head = cfg.get("head", "linear")
    if head not in HEADS:
        raise WeightsFormatError(f"{folder / CONFIG_FILE}: unknown GenD head {head!r}; known: {', '.join(HEADS)}")
    backbone = str(cfg["backbone"])
    kind = backbone_kind(backbone)
    if kind == "pe":
        extractor: nn.Module = PEFeatures(backbone)
        data = import_timm().data.resolve_model_data_config(extractor.backbone)
        spec = InputSpec(size=PE_INPUT_SIZE, mean=tuple(data["mean"]), std=tuple(data["std"]), margin=GEND_MARGIN)
    else:
        bb_folder = resolve_backbone(backbone, allow_download)
        config = backbone_config(bb_folder)
        extractor = CLIPFeatures(config) if kind == "clip" else DINOFeatures(config)
        spec = processor_spec(bb_folder, kind, int(getattr(config, "image_size", 224)))
    network = GenDNetwork(extractor, HEADS[head])
    state = rename_keys(load_safetensors(folder / WEIGHTS_FILE), set(network.state_dict()))
    load_weights(network, state, folder / WEIGHTS_FILE)
    return network.eval(), spec


@register_architecture("gend")
def build_gend(
    weights_path: Path, entry: ModelEntry, device: str | torch.device = "cpu", extra_paths: dict[str, Path] | None = None
) -> TorchEngine:
    """Registry builder: `weights_path` is the checkpoint folder or its model.safetensors, with config.json beside it
    (build_engine fetches both into one subfolder of the weights folder; `extra_paths` only confirms that)."""
    network, spec = load_gend(weights_path)
    labels = LabelMapping(kind="softmax", fake_index=FAKE_INDEX, logits=True)
    return TorchEngine(entry.name, network, spec, labels, device)


# ---------------------------------------------------------------- registry entries: the authors' three checkpoints

GEND_PAPER = ("Yermakov, Cech, Matas, Fritz, 'Deepfake Detection that Generalizes Across Benchmarks', WACV 2026 "
              "(arXiv 2508.06248, github.com/yermandy/GenD)")
GEND_LICENCE = "MIT (GenD code and checkpoints); the backbones keep their own licences (DINOv3: Meta's DINOv3 licence)"
GEND_TRAINED_ON = "FaceForensics++ c23 (paired real/fake frames from the official train split)"
# (name, hub repo, pinned revision, model.safetensors sha256, backbone). Only the CLIP repo's revision and LFS hash
# could be learned here (its commit 891ce014 and the LFS oid of model.safetensors, unchanged since the first upload
# 94137254); the other two stay unpinned and unverified until someone records them from the hub.
GEND_REPOS = (
    ("gend-clip-l14", "yermandy/GenD_CLIP_L_14", "891ce014a0308386c4d7d25b3dcf436a22db5504",
     "d76f0bdfd74a29fe1b1c1b84a80ac92486993e426878e8c7a3944281fbb96833", "openai/clip-vit-large-patch14"),
    ("gend-pe-l", "yermandy/GenD_PE_L", None, None, "vit_pe_core_large_patch14_336 (timm)"),
    ("gend-dinov3-l", "yermandy/GenD_DINOv3_L", None, None, "facebook/dinov3-vitl16-pretrain-lvd1689m"),
)
GEND_BACKENDS = ("torch", "onnx")


def _gend(name: str, repo: str, revision: str | None, sha256: str | None, backbone: str) -> ModelEntry:
    folder = repo.split("/", 1)[1]

    def hub(file: str, sha: str | None) -> WeightsSource:
        return WeightsSource(filename=f"{folder}/{file}", remote_name=file, hf_repo=repo, revision=revision,
                             sha256=sha)

    return ModelEntry(
        name=name,
        architecture="gend",
        card=f"huggingface.co/{repo}",
        description=f"GenD: {backbone} with only its LayerNorms fine-tuned, L2-normalised feature, linear 2-way head",
        weights=hub(WEIGHTS_FILE, sha256),
        companion_files={"config": hub(CONFIG_FILE, None)},
        # Defaults only: the engine takes size, mean and std from the backbone's processor config.
        input=InputSpec(size=224, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
                        margin=GEND_MARGIN),
        labels=LabelMapping(kind="softmax", fake_index=FAKE_INDEX, logits=True),
        paper=GEND_PAPER,
        trained_on=GEND_TRAINED_ON,
        licence=GEND_LICENCE,
        backends=GEND_BACKENDS,
    )


register_models(*(_gend(*row) for row in GEND_REPOS))
