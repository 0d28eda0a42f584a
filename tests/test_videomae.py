"""VideoMAE engine (card 001) against transformers itself: preprocessing, p(fake), labels and bad checkpoints.

The reference is transformers' own `VideoMAEImageProcessor` and `VideoMAEForVideoClassification`, on tiny random
configs saved with `save_pretrained` (the real checkpoint's format) so the tests stay fast on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from support.parts import import_or_require
transformers = import_or_require("transformers")
from transformers import VideoMAEConfig, VideoMAEForVideoClassification  # noqa: E402

from engines.base import WeightsFormatError  # noqa: E402
from engines.registry import build_engine, get_entry  # noqa: E402
from engines.architectures.videomae import IMAGENET_MEAN, IMAGENET_STD, fake_index  # noqa: E402
from engines.weights import WeightsUnavailable  # noqa: E402

try:  # transformers >= 5: the numpy/PIL processor has its own name (the default one needs torchvision)
    from transformers import VideoMAEImageProcessorPil as SlowProcessor
except ImportError:  # transformers 4.x: VideoMAEImageProcessor is the numpy/PIL one
    from transformers import VideoMAEImageProcessor as SlowProcessor

REAL_SIZE, REAL_FRAMES = 224, 16  # what the card's checkpoint reads
SMALL_SIZE, SMALL_FRAMES = 32, 4
LABELS = {0: "REAL", 1: "FAKE"}
PREPROCESS_TOL = 1e-5
P_FAKE_TOL = 1e-5
TINY = dict(patch_size=16, tubelet_size=2, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=37, num_labels=2)


def make_checkpoint(folder: Path, size: int, frames: int, id2label: dict[int, str] = LABELS,
                    seed: int = 0) -> VideoMAEForVideoClassification:
    """Save a random tiny VideoMAE plus the processor config the real checkpoints carry; return the model."""
    torch.manual_seed(seed)
    config = VideoMAEConfig(image_size=size, num_frames=frames, id2label=id2label,
                            label2id={v: k for k, v in id2label.items()}, **TINY)
    model = VideoMAEForVideoClassification(config).eval()
    model.save_pretrained(folder)
    processor(size).save_pretrained(folder)
    return model


def processor(size: int) -> SlowProcessor:
    """Configured as the Kinetics VideoMAE checkpoints are: shortest edge and crop at size, ImageNet stats."""
    return SlowProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                         do_resize=True, do_center_crop=True, do_rescale=True, rescale_factor=1 / 255,
                         do_normalize=True, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))


def reference_p_fake(model: VideoMAEForVideoClassification, clips: np.ndarray, fake: int) -> np.ndarray:
    """p(fake) the transformers way: processor on lists of frames, model, softmax."""
    pixels = processor(clips.shape[2])([list(c) for c in clips], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        return torch.softmax(model(pixel_values=pixels).logits, -1)[:, fake].numpy()


def clips_from(crops: np.ndarray, frames: int) -> np.ndarray:
    """(N, frames, H, W, 3) clips of consecutive real face crops (cycled when there are fewer than `frames`)."""
    n = max(2, len(crops) // frames)
    idx = np.arange(n * frames) % len(crops)
    return crops[idx].reshape(n, frames, *crops.shape[1:])


@pytest.fixture(scope="module")
def real_shape_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videomae224")
    return folder, make_checkpoint(folder, REAL_SIZE, REAL_FRAMES)


@pytest.fixture(scope="module")
def real_clips(ffpp_face_crops) -> np.ndarray:
    return clips_from(ffpp_face_crops(REAL_SIZE), REAL_FRAMES)


def test_registry_entry_is_card_001():
    entry = get_entry("videomae")
    assert entry.card == "001" and entry.weights.hf_repo is None
    assert (entry.input.size, entry.input.frames) == (REAL_SIZE, REAL_FRAMES)


def test_preprocessing_equals_image_processor(ffpp, real_shape_checkpoint, real_clips):
    folder, _ = real_shape_checkpoint
    engine = build_engine("videomae", weights_file=folder)
    assert (engine.spec.size, engine.spec.frames) == (REAL_SIZE, REAL_FRAMES)
    assert engine.spec.mean == IMAGENET_MEAN and engine.spec.std == IMAGENET_STD
    ours = engine.preprocess(real_clips)
    ref = processor(REAL_SIZE)([list(c) for c in real_clips], return_tensors="pt")["pixel_values"]
    assert ours.shape == ref.shape == (len(real_clips), REAL_FRAMES, 3, REAL_SIZE, REAL_SIZE)
    assert (ours - ref).abs().max().item() <= PREPROCESS_TOL


def test_p_fake_matches_transformers_on_real_clips(ffpp, real_shape_checkpoint, real_clips):
    folder, model = real_shape_checkpoint
    got = build_engine("videomae", weights_file=folder).predict(real_clips)
    want = reference_p_fake(model, real_clips, fake=1)
    assert got.dtype == np.float32 and got.shape == (len(real_clips),)
    assert np.abs(got - want).max() <= P_FAKE_TOL


def test_spec_and_labels_come_from_the_checkpoint(tmp_path):
    """A 32-pixel, 4-frame model whose fake class is index 0: the registry's 224/16/index-1 are only defaults."""
    model = make_checkpoint(tmp_path, SMALL_SIZE, SMALL_FRAMES, id2label={0: "Deepfake", 1: "original"}, seed=1)
    engine = build_engine("videomae", weights_file=tmp_path)
    assert (engine.spec.size, engine.spec.frames, engine.labels.fake_index) == (SMALL_SIZE, SMALL_FRAMES, 0)
    clips = np.random.default_rng(0).integers(0, 256, (3, SMALL_FRAMES, SMALL_SIZE, SMALL_SIZE, 3), dtype=np.uint8)
    assert np.abs(engine.predict(clips) - reference_p_fake(model, clips, fake=0)).max() <= P_FAKE_TOL
    with pytest.raises(ValueError, match="expected uint8 batch"):
        engine.predict(np.zeros((1, REAL_FRAMES, REAL_SIZE, REAL_SIZE, 3), np.uint8))


@pytest.mark.parametrize("id2label, index", [
    ({0: "REAL", 1: "FAKE"}, 1),
    ({0: "fake", 1: "real"}, 0),
    ({0: "Original", 1: " DeepFake "}, 1),
    ({0: "pristine", 1: "Manipulated"}, 1),
])
def test_fake_index_from_label_names(id2label, index):
    assert fake_index(id2label) == index


@pytest.mark.parametrize("id2label", [{0: "LABEL_0", 1: "LABEL_1"}, {0: "fake", 1: "deepfake"}])
def test_unusable_label_names_are_refused(id2label):
    with pytest.raises(WeightsFormatError, match="id2label"):
        fake_index(id2label)


def test_checkpoint_without_fake_label_is_refused(tmp_path):
    make_checkpoint(tmp_path, SMALL_SIZE, SMALL_FRAMES, id2label={0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(WeightsFormatError, match="no label named"):
        build_engine("videomae", weights_file=tmp_path)


def test_folder_without_weights_is_refused(tmp_path):
    make_checkpoint(tmp_path, SMALL_SIZE, SMALL_FRAMES)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(WeightsFormatError, match="not a complete Hugging Face checkpoint"):
        build_engine("videomae", weights_file=tmp_path)


def test_truncated_weights_are_refused(tmp_path):
    make_checkpoint(tmp_path, SMALL_SIZE, SMALL_FRAMES)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(WeightsFormatError, match="cannot load as VideoMAE"):
        build_engine("videomae", weights_file=tmp_path)


def test_missing_tensor_is_refused_not_randomly_initialised(tmp_path):
    from safetensors.torch import load_file, save_file

    make_checkpoint(tmp_path, SMALL_SIZE, SMALL_FRAMES)
    weights = tmp_path / "model.safetensors"
    tensors = {k: v for k, v in load_file(weights).items() if not k.startswith("classifier.")}
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(WeightsFormatError, match="classifier"):
        build_engine("videomae", weights_file=tmp_path)


def test_config_for_another_size_is_refused(tmp_path):
    """config.json edited to a size the saved tensors were not trained for: a shape mismatch, not a silent load."""
    make_checkpoint(tmp_path, SMALL_SIZE, SMALL_FRAMES)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": 64, "intermediate_size": 64}))
    with pytest.raises(WeightsFormatError):
        build_engine("videomae", weights_file=tmp_path)


def test_missing_path_and_offline_hub_id_are_unavailable(tmp_path, monkeypatch):
    import huggingface_hub.constants

    with pytest.raises(WeightsUnavailable, match="--weights"):
        build_engine("videomae", weights_file=tmp_path / "nothing" / "here" / "at-all")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailable, match="could not fetch VideoMAE checkpoint"):
        build_engine("videomae", weights_file=Path("no-such-owner/no-such-videomae"))


def test_registry_without_weights_says_how_to_pass_them(tmp_path):
    with pytest.raises(WeightsUnavailable, match="checkpoint folder .* with --weights"):
        build_engine("videomae", weights_dir=tmp_path)
