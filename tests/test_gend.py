"""GenD: parity with a reference wrapped exactly as the authors' src/hf/modeling_gend.py wraps its encoders.

The published checkpoints are ViT-L sized and cannot be downloaded offline, so each test builds a tiny random
backbone with transformers, saves it with save_pretrained into a local folder (the "backbone" a GenD config.json
names), wraps it the authors' way and saves that GenD model with save_pretrained too. The layout mirrored:

- config.json: {"model_type": "GenD", "backbone": <hub id or folder>, "head": "LinearNorm"}.
- CLIP: `feature_extractor.vision_model.*` = CLIPModel.from_pretrained(backbone).vision_model,
  `feature_extractor.visual_projection.weight` (kept, unused); feature = vision_model(x).pooler_output.
- DINOv3: `feature_extractor.backbone.*` = AutoModel.from_pretrained(backbone); feature = last_hidden_state[:, 0].
- Head "LinearNorm": F.normalize(feature, p=2, dim=1) then `model.linear` = Linear(hidden, 2); softmax[1] = p(fake).

The reference preprocesses the crops with the backbone's own image processor where transformers has one that runs
here (CLIP's PIL processor), by hand from preprocessor_config.json otherwise (DINOv3's processors need torchvision).
Its head is set so p(fake) spreads across the real crops (asserted before the parity check).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import AutoModel, CLIPConfig, CLIPModel, DINOv3ViTConfig, PretrainedConfig, PreTrainedModel

from engines.base import WeightsFormatError
from engines.architectures.gend import load_gend
from engines.registry import MODELS, build_engine, get_entry
from engines.weights import WeightsUnavailable, fetch


SIZE = 224
MARGIN = 0.15
TOL = 1e-4
MIN_SPREAD = 100 * TOL
HIDDEN = 32
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _timm_reason() -> str | None:
    try:
        importlib.import_module("timm")
    except Exception as exc:  # ImportError, or torchvision's RuntimeError beside a mismatched torch
        return f"timm does not import here ({type(exc).__name__}: {exc})"
    return None


class RefGenDConfig(PretrainedConfig):
    model_type = "GenD"

    def __init__(self, backbone: str = "openai/clip-vit-large-patch14", head: str = "linear", **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.head = head


class RefCLIPEncoder(nn.Module):
    def __init__(self, backbone: str) -> None:
        super().__init__()
        clip = CLIPModel.from_pretrained(backbone)
        self.vision_model = clip.vision_model
        self.visual_projection = clip.visual_projection
        self.features_dim = self.vision_model.config.hidden_size

    def forward(self, x):
        return self.vision_model(x).pooler_output


class RefDINOEncoder(nn.Module):
    def __init__(self, backbone: str) -> None:
        super().__init__()
        self.backbone = AutoModel.from_pretrained(backbone)
        self.features_dim = self.backbone.config.hidden_size

    def forward(self, x):
        return self.backbone(x).last_hidden_state[:, 0]


class RefLinearProbe(nn.Module):
    def __init__(self, dim: int, normalize: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 2)
        self.normalize_inputs = normalize

    def forward(self, x):
        return self.linear(F.normalize(x, p=2, dim=1) if self.normalize_inputs else x)


class RefGenD(PreTrainedModel):
    config_class = RefGenDConfig

    def __init__(self, config):
        super().__init__(config)
        enc = RefCLIPEncoder if "clip" in config.backbone.lower() else RefDINOEncoder
        self.feature_extractor = enc(config.backbone)
        self.model = RefLinearProbe(self.feature_extractor.features_dim, config.head == "LinearNorm")

    def forward(self, x):
        return self.model(self.feature_extractor(x))


def tiny_clip_backbone(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=8),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=SIZE, patch_size=32),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    from transformers import CLIPImageProcessor

    CLIPImageProcessor().save_pretrained(folder)  # transformers' CLIP defaults = openai/clip-vit-large-patch14's
    return folder


def tiny_dinov3_backbone(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = DINOv3ViTConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             patch_size=16, image_size=SIZE, num_register_tokens=4)
    AutoModel.from_config(config).save_pretrained(folder)
    # What facebook/dinov3-vitl16-pretrain-lvd1689m's preprocessor_config.json holds (resize to 224, ImageNet stats).
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"height": SIZE, "width": SIZE}, "do_normalize": True, "do_rescale": True,
        "rescale_factor": 1 / 255, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD,
    }))
    return folder


def clip_pixels(crops: np.ndarray, backbone: Path) -> torch.Tensor:
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(str(backbone))
    return processor(images=[Image.fromarray(c) for c in crops], return_tensors="pt")["pixel_values"]


def dino_pixels(crops: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() * (1 / 255)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def spread_head(model: RefGenD, pixels: torch.Tensor) -> None:
    """Logit 1 minus logit 0 along the features' main direction, scaled to std 2 over the crops."""
    with torch.no_grad():
        f = F.normalize(model.feature_extractor(pixels), dim=1)
        centred = f - f.mean(0)
        direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        proj = centred @ direction
        scale = 2.0 / proj.std()
        weight = torch.zeros(2, f.shape[1])
        weight[1] = direction * scale
        model.model.linear.weight.copy_(weight)
        model.model.linear.bias.copy_(torch.tensor([0.0, -(f.mean(0) @ direction).item() * scale]))


def make_gend(root: Path, kind: str, crops: np.ndarray) -> tuple[Path, RefGenD, torch.Tensor]:
    backbone = (tiny_clip_backbone if kind == "clip" else tiny_dinov3_backbone)(root / f"{kind}-backbone")
    model = RefGenD(RefGenDConfig(backbone=str(backbone), head="LinearNorm")).eval()
    pixels = clip_pixels(crops, backbone) if kind == "clip" else dino_pixels(crops)
    spread_head(model, pixels)
    folder = root / f"gend-{kind}"
    model.save_pretrained(folder)
    return folder, model, pixels


@pytest.fixture(scope="module")
def crops(ffpp_face_crops) -> np.ndarray:
    return ffpp_face_crops(SIZE, MARGIN)


@pytest.fixture(scope="module", params=["clip", "dino"])
def gend(request, crops, tmp_path_factory):
    kind = request.param
    folder, model, pixels = make_gend(tmp_path_factory.mktemp(kind), kind, crops)
    with torch.no_grad():
        expected = torch.softmax(model(pixels), dim=1)[:, 1].numpy()
    return kind, folder, model, expected


def test_saved_folder_has_the_authors_layout(gend):
    kind, folder, _, _ = gend
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "GenD" and config["head"] == "LinearNorm"
    from safetensors.torch import load_file

    keys = set(load_file(str(folder / "model.safetensors")))
    assert {"model.linear.weight", "model.linear.bias"} <= keys
    prefix = "feature_extractor.vision_model." if kind == "clip" else "feature_extractor.backbone."
    assert all(k.startswith((prefix, "model.linear.", "feature_extractor.visual_projection.")) for k in keys)
    if kind == "clip":
        assert "feature_extractor.visual_projection.weight" in keys


def test_parity_with_reference(gend, crops):
    kind, folder, _, expected = gend
    assert expected.std() > MIN_SPREAD and expected.max() - expected.min() > 10 * MIN_SPREAD, expected
    name = "gend-clip-l14" if kind == "clip" else "gend-dinov3-l"
    engine = build_engine(name, weights_file=folder)
    assert engine.spec.size == SIZE and engine.spec.margin == MARGIN
    got = np.concatenate([engine.predict(crops[:1]), engine.predict(crops[1:])])
    print(f"gend {kind}: max |diff| {np.abs(got - expected).max():.2e}, p(fake) std {expected.std():.3f}, "
          f"range {expected.min():.3f}..{expected.max():.3f} over {len(crops)} crops")
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
    # The model.safetensors path (what build_engine fetches) loads the same folder.
    np.testing.assert_allclose(build_engine(name, weights_file=folder / "model.safetensors").predict(crops[:2]),
                               expected[:2], atol=TOL, rtol=0)


def test_onnx_parity(gend, crops, tmp_path):
    from engines.onnx_backend import onnx_engine_for

    kind, folder, _, expected = gend
    engine = build_engine("gend-clip-l14" if kind == "clip" else "gend-dinov3-l", weights_file=folder)
    ort_engine = onnx_engine_for(engine, tmp_path)
    got = np.concatenate([ort_engine.predict(crops[:1]), ort_engine.predict(crops[1:])])
    print(f"gend {kind}: ORT vs reference max |diff| {np.abs(got - expected).max():.2e}")
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("bias, expect_fake", [((0.0, 6.0), True), ((6.0, 0.0), False)])
def test_label_convention(bias, expect_fake, crops, tmp_path):
    """A head set by hand to push class 1 (the authors' "fake": every non-real source is label 1) gives p(fake)~1."""
    folder, model, _ = make_gend(tmp_path, "clip", crops[:4])
    with torch.no_grad():
        model.model.linear.weight.zero_()
        model.model.linear.bias.copy_(torch.tensor(bias))
    model.save_pretrained(folder)
    p = build_engine("gend-clip-l14", weights_file=folder).predict(crops[:2])
    assert np.all(p > 0.99) if expect_fake else np.all(p < 0.01)


def test_tensorrt_fp16(gend, crops, tmp_path):
    from engines.backends import prepare
    from engines.tensorrt_backend import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"TensorRT fp16 needs a GPU with TensorRT: {reason}")
    _, folder, _, expected = gend
    trt = prepare(build_engine("gend-clip-l14", weights_file=folder, device="cuda"), "tensorrt", "fp16",
                  cache_dir=tmp_path)
    np.testing.assert_allclose(trt.predict(crops), expected, atol=2e-2)


# Not a real part that CI can install: PyPI's timm imports torchvision, and no torchvision imports beside the
# CPU torch these machines pin (README, Model zoo). The PE layout is therefore checked only where timm imports.
@pytest.mark.skipif(_timm_reason() is not None, reason=str(_timm_reason()))
def test_pe_parity_with_timm(crops, tmp_path):
    """GenD_PE_L's layout: timm's Eva PE with dynamic_img_size, head Identity, as `feature_extractor.backbone`."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    name = "vit_pe_core_base_patch16_224"
    backbone = timm.create_model(name, pretrained=False, dynamic_img_size=True)
    backbone.head = nn.Identity()
    probe = RefLinearProbe(backbone.num_features, True)
    data = timm.data.resolve_model_data_config(backbone)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(data["mean"]).view(1, 3, 1, 1)) / torch.tensor(data["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(probe(backbone(x)), 1)[:, 1].numpy()
    state = {f"feature_extractor.backbone.{k}": v for k, v in backbone.state_dict().items()}
    state |= {f"model.{k}": v for k, v in probe.state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "GenD", "backbone": name, "head": "LinearNorm"}))
    got = build_engine("gend-pe-l", weights_file=tmp_path).predict(crops)
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)


# ---------------------------------------------------------------- bad inputs


def test_folder_without_config(gend, tmp_path):
    _, folder, _, _ = gend
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(WeightsFormatError, match=r"needs config\.json \+ model\.safetensors.*missing: config\.json"):
        build_engine("gend-clip-l14", weights_file=tmp_path)


def test_missing_key(gend, tmp_path):
    from safetensors.torch import load_file, save_file

    kind, folder, _, _ = gend
    state = load_file(str(folder / "model.safetensors"))
    del state["model.linear.bias"]
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(WeightsFormatError, match=r"model\.safetensors: does not match GenDNetwork.*missing keys "
                                                 r"\(1\): model\.linear\.bias"):
        build_engine("gend-clip-l14", weights_file=tmp_path)


def test_wrong_architecture(crops, tmp_path):
    """CLIP weights under a config.json that names the DINOv3 backbone: every key is reported as wrong."""
    clip_folder, _, _ = make_gend(tmp_path / "a", "clip", crops[:2])
    dino_backbone = tiny_dinov3_backbone(tmp_path / "dino-backbone")
    config = json.loads((clip_folder / "config.json").read_text()) | {"backbone": str(dino_backbone)}
    (clip_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsFormatError, match=r"does not match GenDNetwork.*missing keys.*feature_extractor\."
                                                 r"backbone\..*unexpected keys.*feature_extractor\.vision_model\."):
        build_engine("gend-dinov3-l", weights_file=clip_folder)


def test_wrong_shape(crops, tmp_path):
    folder, _, _ = make_gend(tmp_path, "clip", crops[:2])
    backbone = Path(json.loads((folder / "config.json").read_text())["backbone"])
    cfg = json.loads((backbone / "config.json").read_text())
    cfg["vision_config"]["hidden_size"] = 48  # the backbone config now disagrees with the weights
    (backbone / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsFormatError, match=r"model\.safetensors: does not match GenDNetwork.*wrong shapes "
                                                 r"\(\d+\): feature_extractor\.vision_model\.embeddings\."
                                                 r"class_embedding: file \(32,\) vs model \(48,\)"):
        build_engine("gend-clip-l14", weights_file=folder)


def test_truncated_weights(gend, tmp_path):
    _, folder, _, _ = gend
    data = (folder / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(WeightsFormatError, match=r"model\.safetensors: not a readable safetensors file"):
        build_engine("gend-clip-l14", weights_file=tmp_path)


def test_not_a_gend_config(gend, tmp_path):
    _, folder, _, _ = gend
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(WeightsFormatError, match="not a GenD config"):
        build_engine("gend-clip-l14", weights_file=tmp_path)


def test_missing_backbone_config_names_what_to_download(gend, tmp_path):
    _, folder, _, _ = gend
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "GenD", "backbone": "nobody/clip-vit-not-cached", "head": "LinearNorm"}))
    with pytest.raises(WeightsUnavailable, match=r"backbone nobody/clip-vit-not-cached is not in the local Hugging "
                                                 r"Face cache.*hf download nobody/clip-vit-not-cached config\.json"):
        load_gend(tmp_path, allow_download=False)


def test_offline_fetch_names_the_pinned_revision(tmp_path):
    with pytest.raises(WeightsUnavailable, match=r"yermandy/GenD_CLIP_L_14 at revision 891ce014a0308386"):
        fetch(get_entry("gend-clip-l14").weights, tmp_path, allow_download=False)


def test_registry_rows():
    for name in ("gend-clip-l14", "gend-pe-l", "gend-dinov3-l"):
        entry = MODELS[name]
        assert entry.architecture == "gend" and entry.licence.startswith("MIT") and entry.paper and entry.trained_on
        assert entry.weights.filename.endswith("/model.safetensors") and entry.weights.hub_filename == "model.safetensors"
        assert entry.companion_files["config"].hub_filename == "config.json"
    assert MODELS["gend-clip-l14"].weights.hash_status == "sha256 pinned"
    assert MODELS["gend-pe-l"].hash_status == "unverified"
