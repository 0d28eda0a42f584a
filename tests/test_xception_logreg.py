"""xception-logreg (card 000): the safe head format against scikit-learn, pickle refusal, and the whole engine.

The head tests fit a real StandardScaler + LogisticRegression; the engine test uses a random Keras Xception
written in the published notop file's Keras 2 layout, since that file cannot be fetched offline, made
input-sensitive (BN statistics fitted to the crops, damped residual branches: keras_xception_ref.py). Its check
first asserts that the reference p(fake) spreads across crops far beyond the tolerance, and the bug tests prove
the same check fails when the engine is fed channel-swapped or blank crops.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.base import InputSpec, WeightsFormatError
from engines.registry import MODELS, XCEPTION_NOTOP_FILENAME, build_engine, get_entry
from engines.weights import ChecksumMismatch, WeightsSource, WeightsUnavailable
from engines.architectures.xception_logreg import (UntrustedPickle, build_xception_logreg, load_head, save_head,
                                                   write_head)
from support.keras_xception_ref import keras_input, random_xception, set_tf_threads, write_legacy_h5
from support.sensitive import PARITY_FAILURE, assert_close, assert_spread, swap_crop_channels

from support.parts import import_or_require
sklearn = import_or_require("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

NAME = "xception-logreg"
DIM = 2048
N_TRAIN, N_TEST = 300, 64
HEAD_TOL = 1e-6
TORCH_HEAD_TOL = 1e-6  # the torch head runs in float32 (measured ~3e-7)
SIZE = 80  # engine test frames: stem 39 -> 37, then pools see 37, 19, 10 (even), 5
PARITY_TOL = 1e-4
# Strong regularisation: 21 crops in 2048-d are separable, and an unregularised head would grow its weights
# without bound and amplify float32 feature rounding far past what a real head sees.
HEAD_C = 1e-3
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative, offset, unevenly scaled features (like pooled ReLU outputs) with a noisy linear label."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(size=(N_TRAIN + N_TEST, DIM))) * rng.uniform(0.1, 3.0, DIM) + rng.uniform(0, 1, DIM)
    y = (x[:, :32].sum(1) - x[:, 32:64].sum(1) + rng.normal(scale=4.0, size=len(x)) > 0).astype(int)
    return x, y


def _fit(labels: list, seed: int = 0, c: float = 0.1):
    x, y = _data(seed)
    names = np.asarray(labels, dtype=object)[y] if labels != [0, 1] else y
    scaler = StandardScaler().fit(x[:N_TRAIN])
    clf = LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(x[:N_TRAIN]), names[:N_TRAIN])
    return scaler, clf, x[N_TRAIN:]


@pytest.mark.parametrize(("labels", "fake_class", "fake_index"), [
    ([0, 1], None, 1),  # integer labels: 1 = fake by default
    (["fake", "real"], None, 0),  # found by name, and index 0 flips the logit's sign
    (["real", "synthetic"], "synthetic", 1),  # named explicitly (classes_ are sorted)
])
def test_head_matches_predict_proba(labels: list, fake_class, fake_index: int, tmp_path: Path) -> None:
    scaler, clf, test = _fit(labels)
    path = save_head(tmp_path / "head.npz", scaler, clf, fake_class=fake_class)
    head = load_head(path)
    assert head.fake_index == fake_index and head.dim == DIM
    assert head.metadata["params"]["C"] == 0.1 and head.metadata["sklearn_version"] == sklearn.__version__
    assert head.metadata["fake_class"] == clf.classes_[fake_index]
    expected = clf.predict_proba(scaler.transform(test))[:, fake_index]
    assert 0.05 < expected.mean() < 0.95  # a real mix of both classes
    assert np.abs(head.p_fake(test) - expected).max() <= HEAD_TOL
    with torch.inference_mode():
        logit = head.to_module()(torch.tensor(test, dtype=torch.float32))[:, 0]
    assert np.abs(torch.sigmoid(logit).numpy() - expected).max() <= TORCH_HEAD_TOL


def test_head_file_is_plain_arrays(tmp_path: Path) -> None:
    scaler, clf, _ = _fit(["fake", "real"])
    path = save_head(tmp_path / "head.npz", scaler, clf)
    with np.load(path, allow_pickle=False) as z:  # raises if anything needed unpickling
        assert {z[k].dtype.kind for k in z.files} <= {"f", "i", "U"}


def test_pickles_need_explicit_trust(tmp_path: Path) -> None:
    scaler, clf, test = _fit([0, 1])
    blob = pickle.dumps(make_pipeline(scaler, clf))
    for name in ("head.pkl", "disguised.npz"):  # the suffix does not matter, the content does
        (bad := tmp_path / name).write_bytes(blob)
        with pytest.raises(UntrustedPickle, match="unpickling can run arbitrary code"):
            load_head(bad)
    trusted = load_head(tmp_path / "disguised.npz", trust_pickle=True)
    expected = clf.predict_proba(scaler.transform(test))[:, 1]
    assert np.abs(trusted.p_fake(test) - expected).max() <= HEAD_TOL
    converted = load_head(write_head(tmp_path / "converted.npz", trusted))
    assert np.abs(converted.p_fake(test) - expected).max() <= HEAD_TOL


def test_registry_entry_and_missing_files(tmp_path: Path) -> None:
    entry = get_entry(NAME)
    assert entry.weights.filename == "xception_logreg_head.npz" and entry.weights.url is None
    assert entry.extra_weights["backbone"].filename == XCEPTION_NOTOP_FILENAME
    with pytest.raises(WeightsUnavailable, match="dfstream train logreg"):
        build_engine(NAME, weights_dir=tmp_path, allow_download=False)
    scaler, clf, _ = _fit([0, 1])
    save_head(tmp_path / entry.weights.filename, scaler, clf)
    (tmp_path / XCEPTION_NOTOP_FILENAME).write_bytes(b"not the published file")
    with pytest.raises(ChecksumMismatch, match="md5"):
        build_engine(NAME, weights_dir=tmp_path, allow_download=False)


def test_head_of_the_wrong_width_is_refused(tmp_path: Path) -> None:
    scaler, clf, _ = _fit([0, 1])
    head = load_head(save_head(tmp_path / "head.npz", scaler, clf))
    narrow = type(head)(head.mean[:10], head.scale[:10], head.coef[:10], head.intercept, head.classes,
                        head.fake_index)
    with pytest.raises(WeightsFormatError, match="takes 10 features, Xception gives 2048"):
        build_xception_logreg(write_head(tmp_path / "narrow.npz", narrow), get_entry(NAME),
                              extra_paths={"backbone": tmp_path / "never_read.h5"})


@pytest.fixture(scope="module")
def keras_case(ffpp_face_crops, tmp_path_factory):
    """(engine, reference p(fake), crops): build_engine fetches both files from one folder; the reference is
    head(Keras features) of a sensitive random Keras Xception, on real face crops."""
    tf = import_or_require("tensorflow")
    set_tf_threads(tf)
    folder = tmp_path_factory.mktemp("logreg")
    crops = ffpp_face_crops(SIZE)
    keras_model = random_xception(SIZE, seed=3, crops=crops)
    write_legacy_h5(keras_model, folder / XCEPTION_NOTOP_FILENAME)
    features = keras_model(keras_input(crops), training=False).numpy().astype(np.float64)
    # A head fitted on these very features, so p(fake) spreads over (0, 1) instead of sitting at one end.
    labels = np.arange(len(crops)) % 2
    scaler = StandardScaler().fit(features)
    clf = LogisticRegression(C=HEAD_C, max_iter=3000).fit(scaler.transform(features), labels)
    save_head(folder / get_entry(NAME).weights.filename, scaler, clf)
    # The registry entry, but with the random backbone's hash (none) and the small test frames.
    entry = get_entry(NAME)
    test_entry = entry.model_copy(update={
        "extra_weights": {"backbone": WeightsSource(filename=XCEPTION_NOTOP_FILENAME)},
        "input": InputSpec(size=SIZE, mean=entry.input.mean, std=entry.input.std),
    })
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MODELS, NAME, test_entry)
        engine = build_engine(NAME, weights_dir=folder, allow_download=False)
    return engine, clf.predict_proba(scaler.transform(features))[:, 1], crops


def check_engine(engine, expected: np.ndarray, crops: np.ndarray) -> float:
    """The check the parity and bug tests share: the reference must spread, the engine must match it."""
    spread = assert_spread(expected, PARITY_TOL, what="Keras features + head")
    worst = assert_close(expected, engine.predict(crops), PARITY_TOL, f"{NAME} vs Keras features + head")
    print(f"{NAME}: max |p_fake diff| {worst:.2e}, reference spread {spread:.3f}")
    return worst


@pytest.mark.slow
def test_engine_matches_keras_features_plus_head(keras_case) -> None:
    engine, expected, crops = keras_case
    check_engine(engine, expected, crops)


@pytest.mark.slow
@pytest.mark.parametrize("bug", [swap_crop_channels, np.zeros_like], ids=["swap_channels", "blank"])
def test_engine_parity_sees_wrong_input(bug, keras_case) -> None:
    engine, expected, crops = keras_case
    with pytest.raises(AssertionError, match=PARITY_FAILURE):
        check_engine(engine, expected, bug(crops))
