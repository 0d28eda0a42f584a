"""xception-lstm (card 002): the card's Keras model, saved as `.keras` and as a legacy `.h5`, imports with parity.

The authors' `COMBINED_best_Phase1.keras` has no public address, so the reference is the card's own `build_model`
with random weights, a short TIME_STEPS and small frames, saved by Keras itself. The weights are made
input-sensitive (keras_xception_ref.py: Xception BN statistics fitted to the frames, damped residual branches;
the Dense pointed along the LSTM states' main direction), the check first asserts that the reference p(fake)
spreads across sequences far beyond the tolerance, and the bug tests prove it fails on swapped or blank frames.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.base import WeightsFormatError
from engines.registry import build_engine, get_entry
from engines.weights import WeightsUnavailable
from engines.architectures.xception_lstm import FAKE_INDEX, parse_config
from support.keras_xception_ref import (damp_residual_branches, fit_bn_stats, keras_input, randomise_bn, set_tf_threads,
                                spread_dense)
from support.sensitive import PARITY_FAILURE, assert_close, assert_spread, swap_crop_channels
from support.parts import import_or_require

NAME = "xception-lstm"
TIME_STEPS = 3  # the card uses 30; the engine reads it from the file
SIZE = 96  # stem 47 -> 45, then pools see 45, 23 (odd) and 12, 6 (even: the extra pixel goes after)
PARITY_TOL = 1e-4
MIN_HIDDEN_SPREAD = 0.1  # the compared LSTM states must span a real range, not sit at zero
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def test_registry_entry() -> None:
    entry = get_entry(NAME)
    assert entry.card == "002" and entry.weights.filename == "COMBINED_best_Phase1.keras"
    assert entry.weights.url is None and entry.weights.hf_repo is None  # the card names neither
    assert entry.labels.kind == "softmax" and entry.labels.fake_index == FAKE_INDEX == 1  # ['Real', 'Fake']
    assert (entry.input.size, entry.input.mean, entry.input.std) == (299, (0.5,) * 3, (0.5,) * 3)


def test_missing_file_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match="publishes no download address.*COMBINED_best_Phase1.keras"):
        build_engine(NAME, weights_dir=tmp_path, allow_download=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sequences: np.ndarray):
    """The card's build_model (TimeDistributed Xception + LSTM + Dropout + Dense softmax), made sensitive to the
    test sequences, saved three ways."""
    tf = import_or_require("tensorflow")
    set_tf_threads(tf)
    import keras
    from keras import layers

    keras.utils.set_random_seed(2)
    inputs = layers.Input(shape=(TIME_STEPS, SIZE, SIZE, 3))
    base = keras.applications.Xception(weights=None, include_top=False, pooling="avg")
    x = layers.TimeDistributed(base)(inputs)
    lstm = layers.LSTM(256)
    x = layers.Dropout(0.5)(lstm(x))
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(x))
    randomise_bn(model, seed=2)
    damp_residual_branches(base)
    fit_bn_stats(base, keras_input(sequences.reshape(-1, SIZE, SIZE, 3)))
    hidden = keras.Model(inputs, lstm.output)
    spread_dense(model.layers[-1], hidden(keras_input(sequences), training=False).numpy())
    folder = tmp_path_factory.mktemp("xception_lstm")
    model.save(folder / "COMBINED_best_Phase1.keras")
    model.save(folder / "legacy.h5")  # Keras' legacy full-model HDF5 (model_weights + model_config)
    model.save_weights(folder / "weights_only.weights.h5")
    return model, hidden, folder


@pytest.fixture(scope="module")
def sequences(ffpp_face_crops) -> np.ndarray:
    """Real face-crop sequences: each FF++ video's consecutive crops form one (TIME_STEPS, SIZE, SIZE, 3) item."""
    crops = ffpp_face_crops(SIZE)
    n = len(crops) // TIME_STEPS * TIME_STEPS
    return crops[:n].reshape(-1, TIME_STEPS, SIZE, SIZE, 3)[::2]


def check_engine(engine, expected: np.ndarray, sequences: np.ndarray) -> float:
    """The check the parity and bug tests share: the reference p(fake) must spread, the engine must match it."""
    spread = assert_spread(expected, PARITY_TOL, what="Keras Xception+LSTM")
    p_fake = engine.predict(sequences)
    assert p_fake.shape == (len(sequences),) and p_fake.dtype == np.float32
    worst = assert_close(expected, p_fake, PARITY_TOL, f"{NAME} vs Keras")
    print(f"{NAME}: max |p_fake diff| {worst:.2e}, reference spread {spread:.3f}")
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("filename", ["COMBINED_best_Phase1.keras", "legacy.h5"])
def test_matches_keras(filename: str, reference, sequences: np.ndarray) -> None:
    """p(fake) matches, and so does the LSTM's last state."""
    model, hidden, folder = reference
    expected = model(keras_input(sequences), training=False).numpy()
    engine = build_engine(NAME, weights_file=folder / filename)
    assert (engine.spec.frames, engine.spec.size) == (TIME_STEPS, SIZE)  # read from the file's config
    check_engine(engine, expected[:, FAKE_INDEX], sequences)

    module = engine.module
    with torch.inference_mode():
        x = engine.preprocess(sequences)
        features = module.backbone(x.flatten(0, 1)).reshape(*x.shape[:2], -1)
        _, (state, _) = module.lstm(features)
    expected_state = hidden(keras_input(sequences), training=False).numpy()
    assert np.ptp(expected_state, axis=0).max() > MIN_HIDDEN_SPREAD
    assert_close(expected_state, state[-1].numpy(), PARITY_TOL, "LSTM last state vs Keras")


@pytest.mark.slow
@pytest.mark.parametrize("bug", [swap_crop_channels, np.zeros_like], ids=["swap_channels", "blank"])
def test_parity_sees_wrong_input(bug, reference, sequences: np.ndarray) -> None:
    """The engine fed channel-swapped or blank frames: the same check must fail."""
    model, _, folder = reference
    expected = model(keras_input(sequences), training=False).numpy()[:, FAKE_INDEX]
    engine = build_engine(NAME, weights_file=folder / "COMBINED_best_Phase1.keras")
    with pytest.raises(AssertionError, match=PARITY_FAILURE):
        check_engine(engine, expected, bug(sequences))


@pytest.mark.slow
def test_weights_only_file_keeps_the_registry_spec(reference, sequences: np.ndarray) -> None:
    """A Keras 3 `.weights.h5` has no config: units come from the shapes, frames and size from the registry."""
    model, _, folder = reference
    engine = build_engine(NAME, weights_file=folder / "weights_only.weights.h5")
    assert (engine.spec.frames, engine.spec.size) == (get_entry(NAME).input.frames, get_entry(NAME).input.size)
    expected = model(keras_input(sequences), training=False).numpy()
    assert_spread(expected, PARITY_TOL, what="Keras Xception+LSTM")
    with torch.inference_mode():
        got = engine.module(engine.preprocess(sequences)).numpy()
    assert_close(expected, got, PARITY_TOL, f"{NAME} (weights-only file) vs Keras")


@pytest.mark.slow
def test_unsupported_configs_are_refused(reference) -> None:
    *_, folder = reference
    with zipfile.ZipFile(folder / "COMBINED_best_Phase1.keras") as z:
        config = json.loads(z.read("config.json"))
    parse_config(config, "ok")
    layers = config["config"]["layers"]
    lstm = next(layer for layer in layers if layer["class_name"] == "LSTM")
    lstm["config"]["recurrent_activation"] = "hard_sigmoid"
    with pytest.raises(WeightsFormatError, match="recurrent_activation 'hard_sigmoid' is not supported"):
        parse_config(config, "bad")
    config["config"]["layers"] = [layer for layer in layers if layer["class_name"] != "LSTM"]
    with pytest.raises(WeightsFormatError, match="no LSTM"):
        parse_config(config, "bad")
