"""`dfstream explain`: Grad-CAM finds evidence where a network's evidence is known to be, and the command explains
the shared Deepfakes video with the real MesoNet, writing images, arrays and a summary that agree with `predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engines.base import InputSpec, LabelMapping, TorchEngine
from engines.registry import build_engine, get_entry
from stream.cli import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE, main
from stream.jobs.explain import GradCam, last_spatial_conv

from support.shared import FFPP, MESONET_WEIGHTS

SIZE = 32
PATCH = (slice(4, 12), slice(18, 28))  # rows, columns of the bright patch the toy network calls fake
FAKE_VIDEO = FFPP / "fake" / "Deepfakes_519_515.mp4"


class BrightnessDetector(nn.Module):
    """p(fake) rises with the brightness it sees: the evidence lies exactly where the image is bright."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                                      nn.ReLU())
        self.head = nn.Linear(4, 1)
        with torch.no_grad():
            for conv in (self.features[0], self.features[2]):
                conv.weight.zero_()
                conv.bias.zero_()
            self.features[0].weight[0] = 1.0 / 27  # channel 0: local mean brightness
            self.features[2].weight[0, 0] = 1.0 / 9
            self.head.weight.copy_(torch.tensor([[8.0, 0.0, 0.0, 0.0]]))
            self.head.bias.fill_(-2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.features(x).mean(dim=(2, 3))))


def toy_engine() -> TorchEngine:
    return TorchEngine("toy", BrightnessDetector(), InputSpec(size=SIZE),
                       LabelMapping(kind="sigmoid", positive="fake"))


def test_heatmap_lies_on_the_evidence() -> None:
    engine = toy_engine()
    crops = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    crops[0][PATCH] = 255
    crops[1][20:30, 2:10] = 255  # elsewhere: the map must follow the patch, not a fixed place
    p_fake, heat = GradCam(engine)(crops)
    assert np.allclose(p_fake, engine.predict(crops), atol=1e-6)
    assert heat.shape == (2, SIZE, SIZE) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    inside = np.zeros((SIZE, SIZE), bool)
    inside[PATCH] = True
    assert inside[np.unravel_index(heat[0].argmax(), heat[0].shape)]
    assert heat[0][inside].mean() > 5 * heat[0][~inside].mean()
    assert heat[1][20:30, 2:10].mean() > 5 * heat[1][PATCH].mean()


def test_frozen_parameters_still_explain() -> None:
    engine = toy_engine()
    engine.module.requires_grad_(False)
    crops = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    crops[0][PATCH] = 255
    _, heat = GradCam(engine)(crops)
    assert heat[0][PATCH].mean() > 0.5


def test_layer_is_the_last_spatial_convolution() -> None:
    engine = toy_engine()
    assert last_spatial_conv(engine.module, SIZE) is engine.module.features[2]


def test_clip_engines_and_non_torch_backends_are_refused_in_words() -> None:
    clip = TorchEngine("clip", BrightnessDetector(), InputSpec(size=SIZE, frames=16),
                       LabelMapping(kind="sigmoid", positive="fake"))
    with pytest.raises(ValueError, match="16-frame clips"):
        GradCam(clip)

    class NotTorch:
        name = "onnx-thing"

    with pytest.raises(ValueError, match="--backend torch"):
        GradCam(NotTorch())  # type: ignore[arg-type]


@pytest.mark.slow
def test_explain_the_deepfakes_video_with_mesonet(tmp_path: Path, capsys) -> None:
    out = tmp_path / "why"
    code = main(["explain", str(FAKE_VIDEO), "--model", "meso4-df", "--weights-dir", str(MESONET_WEIGHTS),
                 "--offline", "--top", "3", "--fps", "2", "--cite", "--out", str(out)])
    assert code == EXIT_OK, capsys.readouterr().err
    summary = json.loads((out / "explanations.json").read_text())
    entries = summary["explanations"]
    assert summary["model"] == "meso4-df" and len(entries) == 3
    scores = [e["p_fake"] for e in entries]
    assert scores == sorted(scores, reverse=True)
    for e in entries:
        assert (out / e["image"]).stat().st_size > 0 and not e["saturated"]
    arrays = np.load(out / "heatmaps.npz")
    crops, heat = arrays["crops"], arrays["heatmaps"]
    assert crops.shape == (3, 256, 256, 3) and heat.shape == (3, 256, 256)
    assert heat.min() >= 0 and np.allclose(heat.max(axis=(1, 2)), 1.0)
    engine = build_engine("meso4-df", weights_dir=MESONET_WEIGHTS, allow_download=False)
    assert np.allclose(engine.predict(crops), scores, atol=1e-5)  # the crops are what was scored and explained
    for e, h in zip(entries, heat):
        assert h[e["peak"][1], e["peak"][0]] == pytest.approx(1.0)
    # --cite: the same top face-frame, explained with numbered citations of the built-in passages
    record = json.loads((out / "explanation.json").read_text())
    facts = record["facts"]
    assert facts["model"] == "meso4-df" and facts["trained_on"] == get_entry("meso4-df").trained_on and facts["landmarks"] == "mtcnn"
    assert facts["score"] == pytest.approx(scores[0], abs=1e-5) and facts["face_px"] > 0
    assert facts["regions"] and facts["peak_region"] and record["image"] == entries[0]["image"]
    assert record["citations"][0]["id"] == "model-mesonet" and record["writer"] == "template"
    md = (out / "explanation.md").read_text()
    assert f"![Grad-CAM evidence]({entries[0]['image']})" in md and "[1]" in md and "## References" in md


def test_explain_refuses_bad_input_clearly(tmp_path: Path, capsys) -> None:
    not_video = tmp_path / "notes.mp4"
    not_video.write_bytes(b"this is not a video" * 100)
    args = ["--weights-dir", str(MESONET_WEIGHTS), "--offline", "--out", str(tmp_path / "out")]
    assert main(["explain", str(not_video), *args]) == EXIT_INPUT_FAILED
    assert "cannot open as video" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    assert main(["explain", str(blank), *args]) == EXIT_USAGE
    assert "no face was found" in capsys.readouterr().err
    assert main(["explain", str(blank), *args, "--model", "meso4-df", "--model", "meso4-f2f"]) == EXIT_USAGE
    assert "exactly one --model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing half-written
