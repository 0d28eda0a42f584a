"""xception-140k: the module's state dict has the published file's layout, loads strictly and scores crops.

The real `best_xception.pth` cannot be fetched offline, so the tests save a freshly built model's state dict in
the same layout and check the whole path (file -> registry builder -> p_fake) plus every way a file can be wrong.
The scoring check uses an input-sensitive random model (tests/support/sensitive.py) on real face crops, asserts that the
reference's p(fake) spreads across them first, and the bug tests prove it fails on swapped or blank crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engines.base import WeightsFormatError
from engines.registry import build_engine, get_entry
from engines.weights import WeightsUnavailable, fetch
from engines.architectures.xception_140k import EXPECTED_STATE_KEYS, Xception140k
from engines.loading import load_state_dict_file
from support.sensitive import PARITY_FAILURE, assert_close, assert_spread, sensitive_model, swap_crop_channels

NAME = "xception-140k"
HF_REPO = "RamadhanZome/deepfake-xception"
SIZE = 299
CROPS_PER_VIDEO = 3  # of the conftest fixture: every third crop is another video
PARITY_TOL = 1e-4


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = Xception140k()
    # Non-trivial BN statistics so a silently skipped buffer would change the scores.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.state_dict()


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_state_dict_has_published_layout(state: dict[str, torch.Tensor]) -> None:
    assert len(state) == EXPECTED_STATE_KEYS == 324
    assert state["fc.weight"].shape == (2, 2048)
    assert state["middle_flow.7.shortcut.0.weight"].shape == (728, 728, 1, 1)
    assert state["block1.layers.1.depthwise.weight"].shape == (64, 1, 3, 3)


@pytest.fixture(scope="module")
def scoring_case(ffpp_face_crops, tmp_path_factory):
    """(engine built by the registry from the saved file, the same weights as a plain module, crops)."""
    crops = ffpp_face_crops(SIZE)[::CROPS_PER_VIDEO]
    torch.manual_seed(0)
    model = sensitive_model(Xception140k(), None, get_entry(NAME).input, crops, seed=0)
    path = _save(model.state_dict(), tmp_path_factory.mktemp("x140k") / "best_xception.pth")
    reference = Xception140k().eval()
    reference.load_state_dict(torch.load(path, weights_only=True), strict=True)
    return build_engine(NAME, weights_file=path), reference, crops


def reference_p_fake(reference: Xception140k, crops: np.ndarray) -> np.ndarray:
    """The card's own pipeline: ToTensor, Normalize(mean=0.5, std=0.5), softmax, index 0 = fake."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        return torch.softmax(reference((x - 0.5) / 0.5), dim=1)[:, 0].numpy()


def check_scores(expected: np.ndarray, engine, crops: np.ndarray) -> float:
    """The check the scoring and bug tests share: the reference must spread, the engine must match it."""
    assert_spread(expected, PARITY_TOL, what="xception-140k card pipeline")
    p_fake = engine.predict(crops)
    assert p_fake.shape == (len(crops),) and p_fake.dtype == np.float32
    return assert_close(expected, p_fake, PARITY_TOL, f"{NAME} engine vs the card's pipeline")


@pytest.mark.slow
def test_loads_strictly_and_scores(scoring_case) -> None:
    engine, reference, crops = scoring_case
    check_scores(reference_p_fake(reference, crops), engine, crops)


@pytest.mark.slow
@pytest.mark.parametrize("bug", [swap_crop_channels, np.zeros_like], ids=["swap_channels", "blank"])
def test_scoring_sees_wrong_input(bug, scoring_case) -> None:
    engine, reference, crops = scoring_case
    with pytest.raises(AssertionError, match=PARITY_FAILURE):
        check_scores(reference_p_fake(reference, crops), engine, bug(crops))


def test_unwraps_checkpoint_and_dataparallel(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    wrapped = {"model_state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 7}
    loaded = load_state_dict_file(_save(wrapped, tmp_path / "ckpt.pth"))
    assert loaded.keys() == state.keys()


def test_wrong_shape(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = _save({**state, "fc.weight": torch.zeros(3, 2048)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsFormatError, match=r"fc\.weight: file \(3, 2048\) vs model \(2, 2048\)"):
        build_engine(NAME, weights_file=path)


def test_missing_and_unexpected_keys(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    broken = {k: v for k, v in state.items() if k != "bn4.running_var"} | {"head.weight": torch.zeros(1)}
    with pytest.raises(WeightsFormatError, match=r"missing keys \(1\): bn4\.running_var.*unexpected.*head\.weight"):
        build_engine(NAME, weights_file=_save(broken, tmp_path / "bad.pth"))


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "best_xception.pth"
    path.write_text("404: Not Found\n")
    with pytest.raises(WeightsFormatError, match="not a readable torch checkpoint"):
        build_engine(NAME, weights_file=path)


def test_offline_fetch_names_hub_repo(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match=HF_REPO):
        fetch(get_entry(NAME).weights, tmp_path, allow_download=False)
