"""Engines register themselves: an architecture file declares its builder and its models beside its network
(`engines.registration`), and the registry imports every file of `engines/architectures` without a list.

A tiny architecture declared in this test module must appear in the registry and in `dfstream models list`, and
build and score like any other; a file dropped into a package is found by `discover`; a second declaration under
a taken name is refused and changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engines.base import InputSpec, LabelMapping, TorchEngine
from engines.entry import ModelEntry
from engines.loading import load_state_dict_file, load_weights
from engines.registration import ARCHITECTURES, MODELS, DuplicateRegistration, register_architecture, register_models
from engines.registry import build_engine, discover, get_entry
from engines.weights import WeightsSource, sha256_of
from stream.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY_ARCH = "tiny-test-arch"
TINY_MODEL = "tiny-test"
TINY_FILE = "tiny_test.pth"


class TinyNet(nn.Module):
    """One 3x3 convolution and a global mean: one logit per crop."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(1, 2, 3))


def build_tiny(weights_path: Path, entry: ModelEntry, device: str = "cpu") -> TorchEngine:
    net = TinyNet()
    load_weights(net, load_state_dict_file(weights_path), weights_path)
    return TorchEngine(entry.name, net, entry.input, entry.labels, device)


def _entry(sha256: str | None, name: str = TINY_MODEL, architecture: str = TINY_ARCH) -> ModelEntry:
    return ModelEntry(name=name, architecture=architecture, description="a tiny test network",
                      weights=WeightsSource(filename=TINY_FILE, sha256=sha256), input=InputSpec(size=16, margin=0.1),
                      labels=LabelMapping(kind="sigmoid", positive="fake", logits=True), paper="this test",
                      trained_on="nothing (random weights)", licence="test only", backends=("torch",))


@pytest.fixture
def tiny(tmp_path):
    """The tiny architecture and its model, registered as an architecture file registers them, and the weights
    file in a weights folder; removed from the registry afterwards."""
    torch.manual_seed(0)
    net = TinyNet()
    torch.save(net.state_dict(), tmp_path / TINY_FILE)
    register_architecture(TINY_ARCH)(build_tiny)
    (entry,) = register_models(_entry(sha256_of(tmp_path / TINY_FILE)))
    try:
        yield entry, net, tmp_path
    finally:
        MODELS.pop(TINY_MODEL, None)
        ARCHITECTURES.pop(TINY_ARCH, None)


def test_a_model_declared_in_its_own_file_is_listed_and_built(tiny, capsys):
    entry, net, weights = tiny
    assert get_entry(TINY_MODEL) is entry and ARCHITECTURES[TINY_ARCH] is build_tiny
    assert main(["models", "list", "--json", "--weights-dir", str(weights)]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[TINY_MODEL]["here"] == "yes" and rows[TINY_MODEL]["hash"] == "sha256 pinned"
    assert rows[TINY_MODEL]["input"] == "16x16 RGB, margin 0.1" and rows[TINY_MODEL]["card / paper"] == "this test"
    assert "meso4-f2f" in rows  # the architecture files' models are still there

    engine = build_engine(TINY_MODEL, weights_dir=weights, allow_download=False)
    assert engine.weights_sha256 == sha256_of(weights / TINY_FILE) and engine.quality == entry.quality
    crops = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        expected = torch.sigmoid(net(x)).numpy()
    assert np.ptp(expected) > 1e-4  # the crops score differently, so a swapped or dropped input would show
    np.testing.assert_allclose(engine.predict(crops), expected, atol=1e-5)


def test_a_file_added_to_a_package_is_discovered_without_being_listed(tmp_path, monkeypatch):
    package = tmp_path / "extra_architectures"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tiny_file.py").write_text(textwrap.dedent(f"""
        from engines.base import InputSpec, LabelMapping
        from engines.entry import ModelEntry
        from engines.registration import register_architecture, register_models
        from engines.weights import WeightsSource


        @register_architecture("discovered-arch")
        def build(weights_path, entry, device="cpu"):
            raise NotImplementedError


        register_models(ModelEntry(name="discovered-model", architecture="discovered-arch", description="found",
                                   weights=WeightsSource(filename="x.pth"), input=InputSpec(size=8),
                                   labels=LabelMapping(kind="sigmoid", positive="fake")))
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert discover("extra_architectures") == ["extra_architectures.tiny_file"]
        assert get_entry("discovered-model").architecture == "discovered-arch" and "discovered-arch" in ARCHITECTURES
    finally:
        MODELS.pop("discovered-model", None)
        ARCHITECTURES.pop("discovered-arch", None)
        for name in ("extra_architectures", "extra_architectures.tiny_file"):
            sys.modules.pop(name, None)


def test_every_declared_model_has_its_builder_in_an_architecture_file():
    assert len(MODELS) >= 21
    for entry in MODELS.values():
        assert ARCHITECTURES[entry.architecture].__module__.startswith("engines.architectures."), entry.name


def test_a_second_model_under_a_taken_name_is_refused_and_nothing_changes(tiny):
    entry, _, _ = tiny
    before = dict(MODELS)
    other = entry.model_copy(update={"description": "another network, same name"})
    fresh = _entry(None, name="tiny-test-2")
    with pytest.raises(DuplicateRegistration, match="model 'tiny-test' is declared twice"):
        register_models(fresh, other)
    assert MODELS == before and "tiny-test-2" not in MODELS  # not even the valid one of the refused batch
    assert register_models(entry) == (entry,) and MODELS == before  # the same declaration again: a no-op


def test_a_second_builder_for_a_taken_architecture_is_refused_and_nothing_changes(tiny):
    def impostor(weights_path, entry, device="cpu"):
        raise AssertionError("never built")

    with pytest.raises(DuplicateRegistration, match="architecture 'tiny-test-arch' is registered by"):
        register_architecture(TINY_ARCH)(impostor)
    assert ARCHITECTURES[TINY_ARCH] is build_tiny


def test_a_model_whose_architecture_nobody_registers_is_refused_before_any_download(tmp_path):
    register_models(_entry(None, name="orphan", architecture="no-such-arch"))
    try:
        with pytest.raises(ValueError, match="needs architecture 'no-such-arch', which no file registers"):
            build_engine("orphan", weights_dir=tmp_path, allow_download=True)
        assert not any(tmp_path.iterdir())
    finally:
        MODELS.pop("orphan", None)


def test_the_registry_loads_every_architecture_without_their_heavy_frameworks():
    heavy = ("transformers", "efficientnet_pytorch", "sklearn", "tensorflow", "onnxruntime", "timm")
    code = f"import sys, engines.registry as r; print(len(r.MODELS), [m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    count, loaded = done.stdout.split(" ", 1)
    assert int(count) >= 21 and loaded.strip() == "[]"
