"""The torch Keras Xception: structure, TF "same" pooling, and feature parity with Keras for every weight layout.

The published notop file cannot be fetched offline, so the parity tests build `keras.applications.Xception` with
random weights made input-sensitive (BN statistics fitted to the real FF++ face crops, damped residual branches:
with random statistics alone its features varied across crops by at most 6e-5, under the 1e-4 tolerance), write
its weights in the Keras 3 layout (`save_weights`, `.keras`) and in the Keras 2 layout of the published file, and
compare features on those crops. The check first asserts that the Keras features spread across crops far beyond
the tolerance, and the bug tests prove the same check fails on channel-swapped or blank crops.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from engines.base import WeightsFormatError
from engines.keras_xception import (FEATURES, KerasMaxPool2d, KerasXception, keras_class, load_xception,
                                    same_pads)
from engines.registry import XCEPTION_NOTOP_FILENAME, XCEPTION_NOTOP_MD5, XCEPTION_NOTOP_URL, get_entry
from support.keras_xception_ref import keras_input, random_xception, set_tf_threads, torch_features, write_legacy_h5
from support.parts import require, import_or_require
from support.sensitive import PARITY_FAILURE, assert_close, assert_spread, swap_crop_channels

# 75 -> stem 37 -> 35, then pools see 35 (odd), 18 (even: the extra pixel goes after), 9, 5.
SIZE = 75
PARITY_TOL = 1e-4
KERAS_NOTOP_PARAMS = 20_861_480  # Xception(include_top=False).count_params(), BN statistics included
KERAS_LAYER_COUNTS = {"conv2d": 6, "separable_conv2d": 34, "batch_normalization": 40}
POOL_SIZES = (5, 6, 7, 8, 74, 75)
# Keras' own variable -> numpy conversion trips numpy 2's copy-keyword deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


@pytest.fixture(scope="module")
def tf():
    tf = import_or_require("tensorflow")
    set_tf_threads(tf)
    return tf


def test_structure_matches_keras() -> None:
    model = KerasXception()
    counts = Counter(keras_class(m) for m in model.keras_layers())
    assert counts == KERAS_LAYER_COUNTS
    n = sum(p.numel() for p in model.parameters())
    n += sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    assert n == KERAS_NOTOP_PARAMS
    assert model(torch.zeros(1, 3, 71, 71)).shape == (1, FEATURES)


@pytest.mark.parametrize(("size", "pads"), [(74, (0, 1)), (75, (1, 1)), (147, (1, 1)), (18, (0, 1))])
def test_same_pads_put_the_odd_pixel_after(size: int, pads: tuple[int, int]) -> None:
    assert same_pads(size, 3, 2) == pads


def test_registry_backbone_hash_is_the_one_keras_publishes() -> None:
    """Keras' own source names the file and its hash (an md5, Keras' `file_hash`); the registry must agree."""
    spec = importlib.util.find_spec("keras")
    if spec is None or spec.origin is None:
        require("Keras (the reference framework)", "keras is not installed")
    source = (Path(spec.origin).parent / "src" / "applications" / "xception.py").read_text()
    published = re.search(r'"xception_weights_tf_dim_ordering_tf_kernels_notop\.h5",.*?file_hash="([0-9a-f]+)"',
                          source, re.S)
    assert published and published.group(1) == XCEPTION_NOTOP_MD5
    assert XCEPTION_NOTOP_URL.endswith(XCEPTION_NOTOP_FILENAME) and XCEPTION_NOTOP_URL in source.replace('"\n    "', "")
    backbone = get_entry("xception-logreg").extra_weights["backbone"]
    assert (backbone.filename, backbone.url, backbone.md5) == (XCEPTION_NOTOP_FILENAME, XCEPTION_NOTOP_URL,
                                                               XCEPTION_NOTOP_MD5)


def test_bad_files_are_format_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("not weights")
    with pytest.raises(WeightsFormatError, match="not an HDF5 file"):
        load_xception(KerasXception(), text)
    legacy = tmp_path / "one_layer.h5"
    with h5py.File(legacy, "w") as f:
        f.attrs["layer_names"] = [b"block1_conv1"]
        f.create_group("block1_conv1").attrs["weight_names"] = [b"block1_conv1/kernel:0"]
        f["block1_conv1"].create_dataset("block1_conv1/kernel:0", data=np.zeros((3, 3, 3, 32), np.float32))
    with pytest.raises(WeightsFormatError, match="expected 80 layers with weights, got 1"):
        load_xception(KerasXception(), legacy)
    keras3 = tmp_path / "empty.weights.h5"
    with h5py.File(keras3, "w") as f:
        f.create_group("layers/conv2d/vars").create_dataset("0", data=np.zeros((3, 3, 3, 32), np.float32))
    with pytest.raises(WeightsFormatError, match="missing layer /layers/batch_normalization"):
        load_xception(KerasXception(), keras3)


# ---------------------------------------------------------------- Keras reference (slow: TensorFlow)


@pytest.mark.slow
@pytest.mark.parametrize("size", POOL_SIZES)
def test_maxpool_matches_keras_same(size: int, tf) -> None:
    from keras import layers

    x = np.random.default_rng(size).normal(size=(1, size, size, 2)).astype(np.float32) - 5.0  # all negative
    expected = layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same")(x).numpy()
    got = KerasMaxPool2d()(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.fixture(scope="module")
def reference(tf, crops, tmp_path_factory):
    """A sensitive random Keras Xception and its weights in each layout: Keras 3 `.weights.h5`, `.keras`, Keras 2
    `.h5`."""
    model = random_xception(SIZE, seed=0, crops=crops)
    folder = tmp_path_factory.mktemp("keras_xception")
    model.save_weights(folder / "x.weights.h5")
    model.save(folder / "x.keras")
    write_legacy_h5(model, folder / "x_legacy.h5")
    return model, folder


@pytest.fixture(scope="module")
def crops(ffpp_face_crops) -> np.ndarray:
    return ffpp_face_crops(SIZE)[::3]  # one crop per FF++ video, real and fake


def check_features(expected: np.ndarray, got: np.ndarray) -> float:
    """The check the parity and bug tests share: Keras' features must spread across crops, torch's must match."""
    assert got.shape == expected.shape == (len(expected), FEATURES)
    spread = assert_spread(expected, PARITY_TOL, what="Keras Xception features")
    worst = assert_close(expected, got, PARITY_TOL, "torch vs Keras Xception features")
    print(f"torch vs Keras features: max |diff| {worst:.2e}, spread {spread:.3f}")
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("filename", ["x.weights.h5", "x.keras", "x_legacy.h5"])
def test_features_match_keras(filename: str, reference, crops: np.ndarray) -> None:
    model, folder = reference
    expected = model(keras_input(crops), training=False).numpy()
    check_features(expected, torch_features(load_xception(KerasXception(), folder / filename), crops))


@pytest.mark.slow
@pytest.mark.parametrize("bug", [swap_crop_channels, np.zeros_like], ids=["swap_channels", "blank"])
def test_feature_parity_sees_wrong_input(bug, reference, crops: np.ndarray) -> None:
    """The torch side fed channel-swapped or blank crops: the same check must fail."""
    model, folder = reference
    expected = model(keras_input(crops), training=False).numpy()
    got = torch_features(load_xception(KerasXception(), folder / "x_legacy.h5"), bug(crops))
    with pytest.raises(AssertionError, match=PARITY_FAILURE):
        check_features(expected, got)


@pytest.mark.slow
def test_wrong_shape_names_the_layer(reference, tmp_path: Path) -> None:
    _, folder = reference
    broken = tmp_path / "broken.h5"
    broken.write_bytes((folder / "x_legacy.h5").read_bytes())
    with h5py.File(broken, "r+") as f:
        del f["block14_sepconv2_bn/block14_sepconv2_bn/gamma:0"]
        f["block14_sepconv2_bn"].create_dataset("block14_sepconv2_bn/gamma:0", data=np.ones(7, np.float32))
    with pytest.raises(WeightsFormatError, match=r"block14_sepconv2_bn.*'gamma' expected shape \(2048,\), got \(7,\)"):
        load_xception(KerasXception(), broken)
