"""MesoNet engines: Keras parity on the authors' real weights, label mapping, and weight-file errors."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from engines.base import TorchEngine, WeightsFormatError
from engines.keras_h5 import read_keras_h5
from engines.mesonet import KerasMaxPool2d, build_meso4, build_mesoinception4
from engines.registry import build_engine, get_entry

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS_DIR = SHARED / "weights" / "mesonet"
CELEBA_DIR = SHARED / "data" / "faces" / "celeba-hq"
CROP_SIZE = 256
N_CROPS = 8
PARITY_TOL = 1e-4
# The first Keras auto-name suffix each file's weighted layers were created with (conv2d_N, batch_normalization_N,
# dense_N): Meso4 was built second in the authors' session, MesoInception first.
MESO4_NAME_START = {"conv2d": 5, "batch_normalization": 5, "dense": 3}
INCEPTION_NAME_START = {"conv2d": 1, "batch_normalization": 1, "dense": 1}
# registry model -> (weight file, builder, reference builder name, first name suffixes)
CASES = {
    "meso4-df": ("Meso4_DF.h5", build_meso4, "meso4", MESO4_NAME_START),
    "meso4-f2f": ("Meso4_F2F.h5", build_meso4, "meso4", MESO4_NAME_START),
    "mesoinception-df": ("MesoInception_DF.h5", build_mesoinception4, "inception", INCEPTION_NAME_START),
    "mesoinception-f2f": ("MesoInception_F2F.h5", build_mesoinception4, "inception", INCEPTION_NAME_START),
}


@pytest.fixture(scope="module")
def ffpp_crops(ffpp_face_crops) -> np.ndarray:
    """Real and fake MTCNN face crops from the FF++ videos, what the engine sees in production (conftest.py)."""
    return ffpp_face_crops(CROP_SIZE)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Real 256x256 CelebA-HQ face photos: fast tests use these so they need no video decoding or face detector."""
    from PIL import Image

    paths = sorted(CELEBA_DIR.glob("*.jpg"))[:N_CROPS]
    images = [np.asarray(Image.open(p).convert("RGB").resize((CROP_SIZE, CROP_SIZE))) for p in paths]
    return np.stack(images).astype(np.uint8)


def _engine(model: str) -> TorchEngine:
    filename, builder, _, _ = CASES[model]
    return builder(WEIGHTS_DIR / filename, get_entry(model), "cpu")


# ---------------------------------------------------------------- Keras reference


def _keras_mesonet(kind: str, first: dict[str, int]):
    """The authors' Keras model, layer for layer, named as Keras 2 auto-named it so `by_name` loading matches."""
    from keras import Model, layers

    counters = {k: count(v) for k, v in first.items()}

    def name(kind_: str) -> str:
        return f"{kind_}_{next(counters[kind_])}"

    def conv(n: int, k: int, dilation: int = 1) -> Callable:
        return layers.Conv2D(n, k, padding="same", dilation_rate=dilation, activation="relu", name=name("conv2d"))

    def bn_pool(x, pool: int):
        x = layers.BatchNormalization(name=name("batch_normalization"))(x)
        return layers.MaxPooling2D(pool, padding="same")(x)

    def inception(x, a: int, b: int, c: int, d: int):
        x1 = conv(a, 1)(x)
        x2 = conv(b, 1)(x)  # one statement per layer: Keras 2 named them in this creation order
        x2 = conv(b, 3)(x2)
        x3 = conv(c, 1)(x)
        x3 = conv(c, 3, 2)(x3)
        x4 = conv(d, 1)(x)
        x4 = conv(d, 3, 3)(x4)
        return layers.Concatenate(axis=-1)([x1, x2, x3, x4])

    inp = layers.Input((CROP_SIZE, CROP_SIZE, 3))
    if kind == "meso4":
        x = bn_pool(conv(8, 3)(inp), 2)
        x = bn_pool(conv(8, 5)(x), 2)
    else:
        x = bn_pool(inception(inp, 1, 4, 4, 2), 2)
        x = bn_pool(inception(x, 2, 4, 4, 2), 2)
    x = bn_pool(conv(16, 5)(x), 2)
    x = bn_pool(conv(16, 5)(x), 4)
    y = layers.Dropout(0.5)(layers.Flatten()(x))
    y = layers.Dense(16, name=name("dense"))(y)
    y = layers.Dropout(0.5)(layers.LeakyReLU(negative_slope=0.1)(y))
    y = layers.Dense(1, activation="sigmoid", name=name("dense"))(y)
    return Model(inp, y)


@pytest.fixture(scope="module")
def tf():
    tf = pytest.importorskip("tensorflow")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already initialised by another test
        pass
    return tf


@pytest.mark.slow
@pytest.mark.parametrize("model", list(CASES))
def test_keras_parity(model: str, ffpp_crops: np.ndarray, tf) -> None:
    """The torch port matches the Keras model with the same file; loading by name also checks our layer order."""
    filename, _, kind, first = CASES[model]
    path = WEIGHTS_DIR / filename
    reference = _keras_mesonet(kind, first)
    weighted = {layer.name for layer in reference.layers if layer.weights}
    assert weighted == {n for n, w in read_keras_h5(path).items() if w}, "reference names must cover the file"
    reference.load_weights(str(path), by_name=True)

    crops = ffpp_crops
    p_real = reference(crops.astype(np.float32) / 255.0, training=False).numpy()[:, 0]
    p_fake = _engine(model).predict(crops)
    assert p_fake.shape == (len(crops),) and p_fake.dtype == np.float32
    assert np.abs((1.0 - p_fake) - p_real).max() <= PARITY_TOL


@pytest.mark.slow
@pytest.mark.parametrize("size", [5, 6, 7, 9])
@pytest.mark.parametrize("pool", [2, 4])
def test_same_maxpool_matches_keras(size: int, pool: int, tf) -> None:
    """TF "same" pooling on odd sizes pads total//2 before and the rest after, with padding never the max."""
    from keras import layers

    x = np.random.default_rng(size).normal(size=(1, size, size, 2)).astype(np.float32) - 5.0
    expected = layers.MaxPooling2D(pool, padding="same")(x).numpy()
    got = KerasMaxPool2d(pool)(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------- labels and registry


def test_p_fake_is_one_minus_network_sigmoid(crops: np.ndarray) -> None:
    engine = _engine("meso4-df")
    with torch.inference_mode():
        p_real = engine.module(engine.preprocess(crops))[:, 0].numpy()
    np.testing.assert_allclose(engine.predict(crops), 1.0 - p_real, atol=1e-6)


def test_build_engine_from_registry(crops: np.ndarray) -> None:
    engine = build_engine("meso4-df", weights_dir=WEIGHTS_DIR, allow_download=False)
    p_fake = engine.predict(crops)
    assert engine.name == "meso4-df" and p_fake.shape == (len(crops),)
    assert np.all((p_fake >= 0.0) & (p_fake <= 1.0))


# ---------------------------------------------------------------- weight-file errors


def _rewrite(src: Path, dst: Path, nested: bool = False, replace: dict[str, np.ndarray] | None = None) -> Path:
    """Copy a Keras h5 (optionally under `model_weights`, as a full-model file) with some datasets replaced."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as out:
        root = out.create_group("model_weights") if nested else out
        for key, value in f.attrs.items():
            root.attrs[key] = value
        for key in f:
            f.copy(f[key], root)
        for key, array in (replace or {}).items():
            del root[key]
            root.create_dataset(key, data=array)
    return dst


def test_full_model_h5_layout(tmp_path: Path, crops: np.ndarray) -> None:
    path = _rewrite(WEIGHTS_DIR / "Meso4_DF.h5", tmp_path / "full.h5", nested=True)
    nested = build_meso4(path, get_entry("meso4-df"), "cpu")
    np.testing.assert_array_equal(nested.predict(crops[:2]), _engine("meso4-df").predict(crops[:2]))


def test_wrong_kernel_shape(tmp_path: Path) -> None:
    bad = np.zeros((3, 3, 8, 8), dtype=np.float32)  # conv2d_6 is a 5x5 conv
    path = _rewrite(WEIGHTS_DIR / "Meso4_DF.h5", tmp_path / "bad.h5", replace={"conv2d_6/conv2d_6/kernel:0": bad})
    with pytest.raises(WeightsFormatError) as e:
        build_meso4(path, get_entry("meso4-df"), "cpu")
    for part in ["bad.h5", "conv2d_6", "kernel", "(5, 5, 8, 8)", "(3, 3, 8, 8)"]:
        assert part in str(e.value)


def test_wrong_architecture(tmp_path: Path) -> None:
    with pytest.raises(WeightsFormatError, match=r"MesoInception_DF\.h5.*expected 10 layers with weights, got 22"):
        build_meso4(WEIGHTS_DIR / "MesoInception_DF.h5", get_entry("meso4-df"), "cpu")


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "Meso4_DF.h5"
    path.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(WeightsFormatError, match=r"Meso4_DF\.h5.*not an HDF5 file"):
        build_meso4(path, get_entry("meso4-df"), "cpu")
