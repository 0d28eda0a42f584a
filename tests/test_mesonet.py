"""MesoNet engines: Keras parity on the authors' real weights, label mapping, and weight-file errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from engines.base import TorchEngine, WeightsFormatError
from engines.architectures.mesonet import KerasMaxPool2d, build_meso4, build_mesoinception4
from engines.registry import build_engine, get_entry
from support.sensitive import PARITY_FAILURE, assert_close, assert_spread, swap_crop_channels
from support.parts import import_or_require

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS_DIR = SHARED / "weights" / "mesonet"
CELEBA_DIR = SHARED / "data" / "faces" / "celeba-hq"
CROP_SIZE = 256
N_CROPS = 8
PARITY_TOL = 1e-4
# registry model -> (weight file, builder)
CASES = {
    "meso4-df": ("Meso4_DF.h5", build_meso4),
    "meso4-f2f": ("Meso4_F2F.h5", build_meso4),
    "mesoinception-df": ("MesoInception_DF.h5", build_mesoinception4),
    "mesoinception-f2f": ("MesoInception_F2F.h5", build_mesoinception4),
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
    filename, builder = CASES[model]
    return builder(WEIGHTS_DIR / filename, get_entry(model), "cpu")


# ---------------------------------------------------------------- Keras reference


@pytest.fixture(scope="module")
def tf():
    tf = import_or_require("tensorflow")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already initialised by another test
        pass
    return tf


@pytest.fixture(scope="module")
def keras_p_fake(ffpp_crops: np.ndarray, tf) -> dict[str, np.ndarray]:
    """p(fake) of the Keras reference built from each file's own layer list, on the FF++ crops."""
    from support.keras_meso_ref import keras_mesonet, keras_p_real

    return {model: 1.0 - keras_p_real(keras_mesonet(WEIGHTS_DIR / CASES[model][0]), ffpp_crops) for model in CASES}


def check_keras_parity(reference: np.ndarray, engine: TorchEngine, crops: np.ndarray, feed=lambda c: c) -> float:
    """The parity check every Keras test and bug test shares: the reference must spread, the engine must match.

    `feed` is what the engine is given instead of the crops, for the tests that break its input on purpose.
    """
    assert_spread(reference, PARITY_TOL, what=f"{engine.name} Keras reference")
    p_fake = engine.predict(feed(crops))
    assert p_fake.shape == (len(crops),) and p_fake.dtype == np.float32
    return assert_close(reference, p_fake, PARITY_TOL, f"{engine.name} torch vs Keras")


@pytest.mark.slow
@pytest.mark.parametrize("model", list(CASES))
def test_keras_parity(model: str, ffpp_crops: np.ndarray, keras_p_fake) -> None:
    """The torch port matches the Keras model built from the file's layer list (a LeakyReLU only where the file
    lists one) and loaded by name, which also checks our layer order."""
    check_keras_parity(keras_p_fake[model], _engine(model), ffpp_crops)


@pytest.mark.parametrize("model", list(CASES))
def test_engine_head_follows_the_file(model: str) -> None:
    """Keras 2 lists weightless layers too: the engine runs a LeakyReLU exactly where the file lists one."""
    from support.keras_meso_ref import head_classes

    listed = head_classes(WEIGHTS_DIR / CASES[model][0])
    assert listed in (["dropout", "dense", "dropout", "dense"], ["dropout", "dense", "leaky_re_lu", "dropout", "dense"])
    assert _engine(model).module.head.leaky == ("leaky_re_lu" in listed)


@pytest.mark.slow
@pytest.mark.parametrize("model", list(CASES))
def test_keras_parity_sees_a_wrong_activation(model: str, ffpp_crops: np.ndarray, keras_p_fake) -> None:
    """The parity check fails when the engine's head has the other activation than the file: it can see it."""
    filename, builder = CASES[model]
    path = WEIGHTS_DIR / filename
    wrong = builder(path, get_entry(model), "cpu", leaky=not _engine(model).module.head.leaky)
    with pytest.raises(AssertionError, match=PARITY_FAILURE):
        check_keras_parity(keras_p_fake[model], wrong, ffpp_crops)


@pytest.mark.slow
@pytest.mark.parametrize("bug", [swap_crop_channels, np.zeros_like], ids=["swap_channels", "blank"])
def test_keras_parity_sees_wrong_input(bug, ffpp_crops: np.ndarray, keras_p_fake) -> None:
    """Channel-swapped or blank crops fed to the torch side only make the same parity check fail."""
    with pytest.raises(AssertionError, match=PARITY_FAILURE):
        check_keras_parity(keras_p_fake["meso4-df"], _engine("meso4-df"), ffpp_crops, feed=bug)


def test_unknown_head_layer_is_refused(tmp_path: Path) -> None:
    """A head layer the engine does not implement (here a PReLU) is an error, never silently skipped."""
    path = _rewrite(WEIGHTS_DIR / "Meso4_DF.h5", tmp_path / "prelu.h5")
    with h5py.File(path, "r+") as f:
        names = [n.decode() for n in f.attrs["layer_names"]]
        names.insert(names.index("dense_3") + 1, "p_re_lu_1")
        f.create_group("p_re_lu_1").attrs["weight_names"] = np.array([], dtype="S1")
        f.attrs["layer_names"] = [n.encode() for n in names]
    with pytest.raises(WeightsFormatError, match=r"prelu\.h5: unsupported layers .*p_re_lu"):
        build_meso4(path, get_entry("meso4-df"), "cpu")


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
