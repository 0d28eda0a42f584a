"""AASIST and AASIST-L: parity with the authors' own model code (tests/support/aasist_ref.py, clovaai/aasist
models/AASIST.py) on their published weights and on random weights, registry data, and refused inputs.

The inputs are windows of the shared speech (../shared/data/speech, decoded to 16 kHz), cut and filled as the
engine cuts them. The reference is the authors' `Model` built from their config/*.conf values, loaded with the same
state dict; p(fake) = softmax(its logits)[0]. Its outputs must spread across the windows first. For random weights
the reference is made input-sensitive (tests/support/sensitive.py: random BN affine, BN statistics fitted to the speech,
the output layer along the features' main direction) and its state dict goes through the registry's builder.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from support.aasist_ref import Model as AuthorsModel
from engines.base import WeightsFormatError
from engines.registry import VOICE_MODELS, model_card
from engines.voice_base import fit_window
from engines.voices import build_voice_engine
from engines.weights import ChecksumMismatch
from support.sensitive import assert_close, assert_spread, fit_bn_stats, inputs_of, randomise_bn_affine, spread_linear
from support.voice_media import AASIST_WEIGHTS, speech_16k, speech_files

TOL = 1e-4
SHORT = 16000  # random-weight parity runs the networks on 1 s windows: any length works, 4 s cost 3 s each here
# config/AASIST.conf and config/AASIST-L.conf, model_config (as the authors' main.py passes it to Model).
CONFS = {
    "aasist": {"architecture": "AASIST", "nb_samp": 64600, "first_conv": 128,
               "filts": [70, [1, 32], [32, 32], [32, 64], [64, 64]], "gat_dims": [64, 32],
               "pool_ratios": [0.5, 0.7, 0.5, 0.5], "temperatures": [2.0, 2.0, 100.0, 100.0]},
    "aasist-l": {"architecture": "AASIST", "nb_samp": 64600, "first_conv": 128,
                 "filts": [70, [1, 32], [32, 32], [32, 24], [24, 24]], "gat_dims": [24, 32],
                 "pool_ratios": [0.4, 0.5, 0.7, 0.5], "temperatures": [2.0, 2.0, 100.0, 100.0]},
}
FILES = {"aasist": "AASIST.pth", "aasist-l": "AASIST-L.pth"}
SHA256 = {"aasist": "51d2d9cf0738172f61e2a384ec50a54a55363240f67c971ed55a92435bc1a1c0",
          "aasist-l": "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a"}


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    """One 64600-sample window per shared speech file (every eighth file, real and fake), short ones tiled."""
    spec = VOICE_MODELS["aasist"].audio
    files = (speech_files("real") + speech_files("fake"))[::8]
    return np.stack([fit_window(speech_16k(f), spec) for f in files])


def reference(name: str, state: dict | None = None) -> AuthorsModel:
    torch.manual_seed(0)
    model = AuthorsModel(CONFS[name])
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


def reference_p_fake(model: AuthorsModel, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        _, logits = model(torch.from_numpy(x))
    return torch.softmax(logits, dim=1)[:, 0].numpy()


@pytest.mark.slow  # 20-24 s each (pytest --fast --durations=40, 2026-12-07)
@pytest.mark.parametrize("name", ["aasist", "aasist-l"])
def test_parity_with_the_authors_code_on_the_published_weights(name, windows):
    state = torch.load(AASIST_WEIGHTS / FILES[name], weights_only=True, map_location="cpu")
    expected = reference_p_fake(reference(name, state), windows)
    assert_spread(expected, TOL)
    engine = build_voice_engine(name, weights_dir=AASIST_WEIGHTS, allow_download=False)
    assert engine.weights_sha256 == SHA256[name]
    assert_close(expected, engine.predict(windows), TOL, f"{name} (published weights)")


@pytest.mark.parametrize("name", ["aasist", "aasist-l"])
def test_parity_with_the_authors_code_on_random_weights(name, windows, tmp_path):
    """On 1 s windows (the engine's module and label mapping, not its 64600-sample batch check)."""
    model = reference(name)
    short = np.ascontiguousarray(windows[:, :SHORT])
    x = torch.from_numpy(short)
    randomise_bn_affine(model, seed=1)
    fit_bn_stats(model, x)
    spread_linear(model.out_layer, inputs_of(model.out_layer, model, x))
    expected = reference_p_fake(model, short)
    assert_spread(expected, TOL)
    path = tmp_path / FILES[name]
    torch.save(model.state_dict(), path)
    engine = build_voice_engine(name, weights_file=path)
    with torch.no_grad():
        got = engine.labels.to_p_fake(engine.module(x)).numpy()
    assert_close(expected, got, TOL, f"{name} (random weights)")


def test_registry_entries_name_the_published_files():
    for name in ("aasist", "aasist-l"):
        entry = VOICE_MODELS[name]
        assert entry.weights.sha256 == SHA256[name]
        assert entry.weights.url == f"https://raw.githubusercontent.com/clovaai/aasist/main/models/weights/{FILES[name]}"
        assert entry.audio.samples == 64600 and entry.audio.sample_rate == 16000 and entry.audio.short == "repeat"
        assert entry.labels.kind == "softmax" and entry.labels.fake_index == 0 and entry.labels.logits
        row = model_card(name)
        assert "ICASSP 2022" in row["card / paper"] and "ASVspoof 2019 LA" in row["trained on"]
        assert row["licence"].startswith("MIT") and row["hash"] == "sha256 pinned" and "64600" in row["input"]


def test_a_wrong_sha256_is_refused_and_the_file_kept(tmp_path):
    bad = tmp_path / "AASIST.pth"
    shutil.copyfile(AASIST_WEIGHTS / "AASIST-L.pth", bad)  # a real checkpoint, but not the published AASIST
    before = bad.read_bytes()
    with pytest.raises(ChecksumMismatch, match="sha256"):
        build_voice_engine("aasist", weights_dir=tmp_path, allow_download=False)
    assert bad.read_bytes() == before


def test_wrong_weight_files_are_refused(tmp_path):
    with pytest.raises(WeightsFormatError, match="does not match"):  # AASIST-L's tensors into AASIST
        build_voice_engine("aasist", weights_file=AASIST_WEIGHTS / "AASIST-L.pth")
    text = tmp_path / "AASIST.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsFormatError, match="not a readable torch checkpoint"):
        build_voice_engine("aasist", weights_file=text)


def test_batches_that_are_not_float_waveforms_in_range_are_refused(windows):
    engine = build_voice_engine("aasist-l", weights_dir=AASIST_WEIGHTS, allow_download=False)
    batch = windows[:2].copy()
    for bad, match in [((batch * 32768).astype(np.float32), r"\[-1, 1\]"), (batch.astype(np.float64), "float32"),
                       (batch[:, :64000], r"\(B, 64600\)"), (np.where(batch > 0.1, np.nan, batch), "NaN")]:
        with pytest.raises(ValueError, match=match):
            engine.predict(bad)
    assert np.array_equal(batch, windows[:2])  # nothing was changed in place
    assert engine.predict(np.zeros((0, 64600), np.float32)).shape == (0,)
