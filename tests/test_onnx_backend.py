"""ONNX Runtime backend: every buildable registry engine exports with a dynamic batch and agrees with torch.

Parity is measured on real MTCNN face crops at batch 1 and at a larger batch, which is also what proves the batch
axis stayed dynamic. Xception's real weights cannot be fetched offline, so it uses a saved random-weight state dict
made input-sensitive (tests/support/sensitive.py: BN statistics of real crops, a head whose logits spread): a parity check
first asserts that the torch reference's outputs spread far beyond the tolerance, and the bug tests prove that
the same check fails when ONNX Runtime is fed channel-swapped or blank input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engines.base import InputSpec, LabelMapping, TorchEngine, channel_stats, normalise
from engines.onnx_backend import OnnxEngine, OnnxModelError, export_onnx, onnx_engine_for
from engines.registry import build_engine
from support.sensitive import (INPUT_BUGS, PARITY_FAILURE, assert_close, assert_spread, inject, sensitive_xception,
                       spread_linear)

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "shared" / "weights" / "mesonet"
MESONETS = ["meso4-df", "meso4-f2f", "mesoinception-df", "mesoinception-f2f"]
MESO_SIZE = 256
XCEPTION = "xception-140k"
XCEPTION_SIZE = 299
XCEPTION_CROPS = 5  # a 299^2 Xception pass costs ~0.1-0.5 s per crop per backend on 2 shared cores
CROPS_PER_VIDEO = 3  # of the conftest fixture: every third crop is another video
PARITY_TOL = 1e-4
TOY_CLIPS = 5
CLIP = InputSpec(size=16, frames=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))  # a toy temporal engine


def _meso(name: str) -> TorchEngine:
    return build_engine(name, weights_dir=WEIGHTS_DIR, allow_download=False)


def _assert_parity(engine: TorchEngine, onnx_engine: OnnxEngine, crops: np.ndarray) -> float:
    """max |p_fake(torch) - p_fake(ORT)| over batch 1 and the whole batch; asserts it is within PARITY_TOL, after
    asserting that the torch reference's p_fake spreads across the crops far beyond PARITY_TOL."""
    assert len(crops) > 1, "need more than one crop to exercise the dynamic batch axis"
    spread = assert_spread(engine.predict(crops), PARITY_TOL, what=f"{engine.name} torch reference")
    worst = 0.0
    for batch in (crops[:1], crops):
        expected, got = engine.predict(batch), onnx_engine.predict(batch)
        assert got.shape == (len(batch),) and got.dtype == np.float32
        worst = max(worst, assert_close(expected, got, PARITY_TOL, f"{engine.name} ORT vs torch"))
    print(f"{engine.name}: ORT vs torch max |p_fake diff| = {worst:.2e} over {len(crops)} crops, spread {spread:.3f}")
    return worst


@pytest.mark.parametrize("name", MESONETS)
def test_mesonet_parity(name: str, ffpp_face_crops, tmp_path: Path) -> None:
    engine = _meso(name)
    onnx_engine = OnnxEngine(
        name, export_onnx(engine, tmp_path / f"{name}.onnx"), engine.spec, engine.labels, intra_op_threads=1
    )
    _assert_parity(engine, onnx_engine, ffpp_face_crops(MESO_SIZE))


@pytest.fixture(scope="module")
def xception(ffpp_face_crops, tmp_path_factory) -> tuple[TorchEngine, OnnxEngine, np.ndarray]:
    """The sensitive Xception, its ORT twin and the crops it is compared on (one per FF++ video)."""
    crops = ffpp_face_crops(XCEPTION_SIZE)[::CROPS_PER_VIDEO]
    folder = tmp_path_factory.mktemp("xception")
    engine = sensitive_xception(crops, folder)
    return engine, onnx_engine_for(engine, folder / "cache"), crops[:XCEPTION_CROPS]


@pytest.fixture(scope="module")
def meso(ffpp_face_crops, tmp_path_factory) -> tuple[TorchEngine, OnnxEngine, np.ndarray]:
    engine = _meso("meso4-df")
    return engine, onnx_engine_for(engine, tmp_path_factory.mktemp("meso")), ffpp_face_crops(MESO_SIZE)


@pytest.mark.slow
def test_xception_parity(xception) -> None:
    _assert_parity(*xception)


@pytest.mark.parametrize("bug", list(INPUT_BUGS))
@pytest.mark.parametrize("case", ["meso", pytest.param("xception", marks=pytest.mark.slow)])
def test_parity_sees_wrong_input(case: str, bug: str, request, monkeypatch) -> None:
    """ORT fed channel-swapped or blank input: the very check the parity tests run must fail."""
    engine, onnx_engine, crops = request.getfixturevalue(case)
    inject(monkeypatch, onnx_engine, INPUT_BUGS[bug])
    with pytest.raises(AssertionError, match=PARITY_FAILURE):
        _assert_parity(engine, onnx_engine, crops)


def test_cache_reuses_export(tmp_path: Path) -> None:
    engine = _meso("meso4-df")
    first = onnx_engine_for(engine, tmp_path)
    mtime = first.path.stat().st_mtime_ns
    second = onnx_engine_for(engine, tmp_path)
    assert second.path == first.path and second.path.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no partial file left behind
    assert first.name == engine.name and first.spec == engine.spec
    # Other weights, same name: a different cache file.
    other = onnx_engine_for(_meso("meso4-f2f"), tmp_path)
    assert other.path != first.path


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    engine = _meso("meso4-df")
    corrupt = tmp_path / "meso4-df.onnx"
    corrupt.write_bytes(b"404: Not Found\n")
    with pytest.raises(OnnxModelError, match="is not a readable ONNX model"):
        OnnxEngine(engine.name, corrupt, engine.spec, engine.labels)
    with pytest.raises(OnnxModelError, match="not found"):
        OnnxEngine(engine.name, tmp_path / "absent.onnx", engine.spec, engine.labels)
    # A corrupted cache entry is reported, not silently run.
    cached = onnx_engine_for(engine, tmp_path / "cache").path
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])
    with pytest.raises(OnnxModelError, match=cached.name):
        onnx_engine_for(engine, tmp_path / "cache")


def test_wrong_engine_file(tmp_path: Path) -> None:
    """A file exported for another input size is refused at load time, not at the first predict."""
    meso = _meso("meso4-df")
    path = export_onnx(meso, tmp_path / "meso.onnx")
    spec = meso.spec.model_copy(update={"size": XCEPTION_SIZE})
    with pytest.raises(OnnxModelError, match="expected 'input'"):
        OnnxEngine(meso.name, path, spec, meso.labels)


class _ToyClip(torch.nn.Module):
    """(N, T, 3, S, S) -> (N, 2) logits: per-frame conv, mean over time, linear; stands in for temporal engines."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding="same")
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        f = self.conv(x.flatten(0, 1)).mean(dim=(2, 3)).unflatten(0, (n, t)).mean(dim=1)
        return self.fc(f)


def test_temporal_engine_parity(ffpp_face_crops, tmp_path: Path) -> None:
    """Clips of real face crops, one video each, and a head spread over them: the toy's outputs differ per clip."""
    torch.manual_seed(0)
    toy = _ToyClip().eval()
    clips = ffpp_face_crops(CLIP.size)[: TOY_CLIPS * CLIP.frames].reshape(TOY_CLIPS, CLIP.frames, CLIP.size,
                                                                           CLIP.size, 3)
    with torch.no_grad():
        x = normalise(clips, *channel_stats(CLIP))
        n, t = x.shape[:2]
        spread_linear(toy.fc, toy.conv(x.flatten(0, 1)).mean(dim=(2, 3)).unflatten(0, (n, t)).mean(dim=1))
    engine = TorchEngine("toy-clip", toy, CLIP, LabelMapping(kind="softmax", fake_index=1, logits=True))
    _assert_parity(engine, onnx_engine_for(engine, tmp_path), clips)
