"""The transformers audio-classification voice engine: parity with transformers' own pipeline on random weights.

Published anti-spoofing checkpoints cannot be downloaded here, so each test builds a tiny random wav2vec2 or WavLM
classifier with transformers, saves it with save_pretrained (config.json, model.safetensors) beside its feature
extractor (preprocessor_config.json, do_normalize as the hub's wav2vec2 fine-tunes have it) and builds the
registry's `hf-audio` engine from that folder. The reference is `pipeline("audio-classification")` on each window
(its feature extractor, its softmax), reading the fake class's score by name. The head is pointed along the pooled
features' main direction so the reference spreads across the shared speech first.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification, WavLMConfig,
                          WavLMForSequenceClassification, pipeline)

from engines.base import WeightsFormatError
from engines.architectures.hf_audio import fake_index
from engines.registry import VOICE_MODELS, model_card
from engines.voice_base import fit_window
from engines.voices import build_voice_engine
from support.sensitive import assert_close, assert_spread, inputs_of, spread_linear
from support.voice_media import RATE, speech_16k, speech_files

TOL = 1e-4
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(32, 32, 32),
            conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
            classifier_proj_size=16, num_labels=2)
MODELS = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2ForSequenceClassification),
          "wavlm": (WavLMConfig, WavLMForSequenceClassification)}


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    spec = VOICE_MODELS["hf-audio"].audio
    files = (speech_files("real") + speech_files("fake"))[::5]
    return np.stack([fit_window(speech_16k(f), spec) for f in files])


def tiny_checkpoint(folder, kind: str, id2label: dict[int, str], windows: np.ndarray):
    torch.manual_seed(0)
    config_cls, model_cls = MODELS[kind]
    model = model_cls(config_cls(**TINY, id2label=id2label, label2id={v: k for k, v in id2label.items()})).eval()
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=True)
    x = extractor(list(windows), sampling_rate=RATE, return_tensors="pt")["input_values"]
    with torch.no_grad():
        spread_linear(model.classifier, inputs_of(model.classifier, model, x))
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["wav2vec2", "wavlm"])
@pytest.mark.parametrize("id2label", [{0: "real", 1: "fake"}, {0: "spoof", 1: "bonafide"}])
def test_parity_with_the_transformers_pipeline(kind, id2label, windows, tmp_path):
    folder = tiny_checkpoint(tmp_path / kind, kind, id2label, windows)
    fake_name = next(n for n in id2label.values() if n in ("fake", "spoof"))
    classify = pipeline("audio-classification", model=str(folder), feature_extractor=str(folder), device="cpu")
    expected = np.array([next(r["score"] for r in classify({"raw": w, "sampling_rate": RATE}, top_k=None)
                              if r["label"] == fake_name) for w in windows])
    assert_spread(expected, TOL)
    engine = build_voice_engine("hf-audio", weights_file=folder)
    assert engine.labels.fake_index == next(i for i, n in id2label.items() if n == fake_name)
    assert_close(expected, engine.predict(windows), TOL, f"hf-audio ({kind}, {id2label})")


def test_the_fake_class_is_read_from_the_names_else_declared():
    assert fake_index({0: "fake", 1: "real"}, declared=1) == 0
    assert fake_index({0: "bonafide", 1: "spoof"}, declared=0) == 1
    assert fake_index({0: "Real", 1: "something"}, declared=0) == 1  # two classes, one named real
    assert fake_index({0: "LABEL_0", 1: "LABEL_1"}, declared=1) == 1
    with pytest.raises(WeightsFormatError, match="several fake"):
        fake_index({0: "fake", 1: "spoof"}, declared=0)
    with pytest.raises(WeightsFormatError, match="no class 2"):
        fake_index({0: "LABEL_0", 1: "LABEL_1"}, declared=2)


def test_a_folder_without_its_feature_extractor_is_refused(windows, tmp_path):
    folder = tiny_checkpoint(tmp_path / "ckpt", "wav2vec2", {0: "real", 1: "fake"}, windows[:2])
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(WeightsFormatError, match="preprocessor_config.json"):
        build_voice_engine("hf-audio", weights_file=folder)


def test_the_registered_hub_checkpoint_is_pinned():
    entry = VOICE_MODELS["w2v2-deepfake-v2"]
    assert entry.weights.hf_repo == "MelodyMachine/Deepfake-audio-detection-V2"
    assert len(entry.weights.revision) == 40 and int(entry.weights.revision, 16) >= 0
    assert {s.revision for s in entry.files().values()} == {entry.weights.revision}
    assert set(entry.files()) == {"weights", "config", "preprocessor"}
    assert model_card("w2v2-deepfake-v2")["hash"] == "unverified (revision pinned)"
