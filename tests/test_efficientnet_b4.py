"""ICPR 2020 EfficientNet-B4 family: parity with references in the authors' layout, labels, backends, bad files.

The references are built here from the package the authors used, `efficientnet_pytorch`
(`EfficientNet.from_name('efficientnet-b4')`, random weights: the published files cannot be downloaded offline),
wrapped the way polimi-ispl/icpr2020dfdc `architectures/fornet.py` wraps it:

- EfficientNetB4: keys `efficientnet.*` (no `_fc`) + `classifier.{weight,bias}` = Linear(1792, 1) on
  `_avg_pooling(extract_features(x))` flattened; efficientnet_pytorch's own `extract_features` is the reference.
- EfficientNetAutoAttB4: as above plus `efficientnet.attconv` = Conv2d(56, 1, 1); after MBConv block 9 the block
  output is multiplied by sigmoid(attconv(output)).
- *ST: `feat_ext.*` (one of the two above, its own classifier unused) + `classifier.0` BatchNorm1d(1792) +
  `classifier.1` Linear(1792, 1).

Each reference's BatchNorm statistics come from the shared real face crops and its head is scaled so logits spread,
so the parity check is input-sensitive (asserted first); its state dict is saved and loaded by the registry builder.

A B4 forward pass over the crops costs seconds on a 2-core machine, and an engine's first call at a batch size
(tracing and freezing its TorchScript graph) several, so each is made once per module: the references' logits
(`ref_logits`, a forward of the finished reference) and the torch engines built from their files with their
predictions (`engines`, `engine_p`); the parity, ensemble and ONNX tests compare against those, on `CROP_STEP`'s
share of the shared crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engines.base import WeightsFormatError
from engines.registry import MODELS, build_engine, get_entry
from engines.weights import ChecksumMismatch, WeightsUnavailable, fetch

efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")
EfficientNet = efficientnet_pytorch.EfficientNet

SIZE = 224
MARGIN = 0.3
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
TOL = 1e-4
MIN_SPREAD = 100 * TOL  # the references' p(fake) must spread across crops far beyond the tolerance
ARCHS = ("effb4", "effb4st", "effb4att", "effb4attst")
# The parity tests use every CROP_STEP-th shared crop (7 of 21: real faces from across the shared videos). Why: their
# time grows with the batch (an engine's first call at a batch size runs the network about six times while it traces,
# freezes and profiles its graph: 72 s for 21 crops, 23 s for one, on the loaded 2-core machine, 2026-12-07), and
# seven faces already spread p(fake) far beyond the tolerance (asserted). The trade-off: fewer faces behind each
# parity figure and behind int8's agreement (an expected failure on random weights until the published ones are here).
CROP_STEP = 3


class RefEfficientNetAutoAtt(EfficientNet):
    """efficientnet_pytorch's EfficientNet with the AutoAtt branch (fornet's EfficientNetAutoAtt behaviour)."""

    def extract_features(self, inputs):
        x = self._swish(self._bn0(self._conv_stem(inputs)))
        for idx, block in enumerate(self._blocks):
            rate = self._global_params.drop_connect_rate
            x = block(x, drop_connect_rate=rate * float(idx) / len(self._blocks) if rate else rate)
            if idx == 9:
                x = x * torch.sigmoid(self.attconv(x))
        return self._swish(self._bn1(self._conv_head(x)))


class RefGen(nn.Module):
    """fornet.EfficientNetGen / EfficientNetGenAutoAtt: `efficientnet` without `_fc`, then `classifier`."""

    def __init__(self, attention: bool) -> None:
        super().__init__()
        cls = RefEfficientNetAutoAtt if attention else EfficientNet
        self.efficientnet = cls.from_name("efficientnet-b4")
        if attention:
            self.efficientnet.attconv = nn.Conv2d(kernel_size=1, in_channels=56, out_channels=1)
        self.classifier = nn.Linear(self.efficientnet._conv_head.out_channels, 1)
        del self.efficientnet._fc

    def features(self, x):
        return self.efficientnet._avg_pooling(self.efficientnet.extract_features(x)).flatten(start_dim=1)

    def forward(self, x):
        return self.classifier(self.efficientnet._dropout(self.features(x)))


class RefST(nn.Module):
    """fornet.SiameseTuning: `feat_ext` + BatchNorm1d + Linear head."""

    def __init__(self, attention: bool) -> None:
        super().__init__()
        self.feat_ext = RefGen(attention)
        self.classifier = nn.Sequential(nn.BatchNorm1d(num_features=1792), nn.Linear(in_features=1792, out_features=1))

    def forward(self, x):
        return self.classifier(self.feat_ext.features(x))


def reference(arch: str) -> nn.Module:
    attention = "att" in arch
    return RefST(attention) if arch.endswith("st") else RefGen(attention)


def normalised(crops: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN) / STD


def calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """BatchNorm running statistics from the real crops (cumulative average over one train-mode pass)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def spread_head(model: nn.Module, x: torch.Tensor) -> None:
    """Rescale the final Linear so the logits over `x` have mean 0 and std 2: p(fake) then spreads over (0, 1)."""
    head = model.classifier[1] if isinstance(model.classifier, nn.Sequential) else model.classifier
    with torch.no_grad():
        logits = model(x).squeeze(1)
        scale = 2.0 / logits.std()
        head.weight.mul_(scale)
        head.bias.copy_(head.bias * scale - logits.mean() * scale)


@pytest.fixture(scope="module")
def crops(ffpp_face_crops) -> np.ndarray:
    return ffpp_face_crops(SIZE, MARGIN)[::CROP_STEP]


@pytest.fixture(scope="module")
def refs(crops) -> dict[str, nn.Module]:
    x = normalised(crops)
    out = {}
    for i, arch in enumerate(ARCHS):
        torch.manual_seed(i)
        model = calibrate(reference(arch), x)
        spread_head(model, x)
        out[arch] = model
    return out


@pytest.fixture(scope="module")
def files(refs, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("icpr")
    paths = {}
    for arch, model in refs.items():
        paths[arch] = folder / f"{arch}.pth"
        torch.save(model.state_dict(), paths[arch])
    return paths


@pytest.fixture(scope="module")
def ref_logits(refs, crops) -> dict[str, torch.Tensor]:
    """Each finished reference's logits over the crops: one forward pass each, shared by the module's tests."""
    x = normalised(crops)
    with torch.no_grad():
        return {arch: model(x).squeeze(1) for arch, model in refs.items()}


@pytest.fixture(scope="module")
def engines(files) -> dict:
    """The registry's torch engines, built once from the references' files (`{arch}-dfdc` entries)."""
    return {arch: build_engine(f"{arch}-dfdc", weights_file=files[arch]) for arch in ARCHS}


@pytest.fixture(scope="module")
def engine_p(engines, crops) -> dict[str, np.ndarray]:
    """Each torch engine's p(fake) over all the crops in one batch."""
    return {arch: engine.predict(crops) for arch, engine in engines.items()}


def test_state_dicts_have_the_authors_layout(refs):
    plain, st, att, attst = (refs[a].state_dict() for a in ARCHS)
    assert plain["classifier.weight"].shape == (1, 1792) and "efficientnet._fc.weight" not in plain
    assert att["efficientnet.attconv.weight"].shape == (1, 56, 1, 1)
    assert set(att) - set(plain) == {"efficientnet.attconv.weight", "efficientnet.attconv.bias"}
    assert st["classifier.0.running_var"].shape == (1792,) and st["classifier.1.weight"].shape == (1, 1792)
    assert "feat_ext.classifier.weight" in st and "feat_ext.efficientnet.attconv.weight" in attst


@pytest.mark.parametrize("arch", ARCHS)
def test_parity_with_reference(arch, ref_logits, engines, engine_p, crops):
    expected = torch.sigmoid(ref_logits[arch]).numpy()
    assert expected.std() > MIN_SPREAD and expected.max() - expected.min() > 10 * MIN_SPREAD, expected
    got = engine_p[arch]  # batch N
    single = engines[arch].predict(crops[:1])  # batch 1
    print(f"{arch}: max |diff| {np.abs(got - expected).max():.2e}, p(fake) std {expected.std():.3f} "
          f"range {expected.min():.3f}..{expected.max():.3f} over {len(crops)} crops")
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
    np.testing.assert_allclose(single, expected[:1], atol=TOL, rtol=0)


def test_ensemble_is_mean_of_logits(ref_logits, files, crops):
    logits = torch.stack([ref_logits[a] for a in ARCHS]).mean(0)
    expected = torch.sigmoid(logits).numpy()
    assert expected.std() > MIN_SPREAD
    # The registry builder as build_engine calls it: main file = effb4's, the others by their architecture role.
    from engines.architectures.efficientnet_b4 import build_ensemble

    entry = get_entry("effb4-ensemble-dfdc")
    assert set(entry.extra_weights) == set(ARCHS[1:])
    engine = build_ensemble(files["effb4"], entry, extra_paths={a: files[a] for a in ARCHS[1:]})
    np.testing.assert_allclose(engine.predict(crops), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("bias, expect_fake", [(6.0, True), (-6.0, False)])
def test_label_convention(bias, expect_fake, refs, tmp_path, crops):
    """A head set by hand to output a large positive logit (the authors' label 1 = fake) reads as p(fake) ~ 1."""
    state = {k: v.clone() for k, v in refs["effb4"].state_dict().items()}
    state["classifier.weight"].zero_()
    state["classifier.bias"].fill_(bias)
    path = tmp_path / "hand.pth"
    torch.save(state, path)
    p = build_engine("effb4-ffpp", weights_file=path).predict(crops[:2])
    assert np.all(p > 0.99) if expect_fake else np.all(p < 0.01)


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_parity(arch, files, engine_p, crops, tmp_path):
    """The `-ffpp` entry built from the same file and exported to ONNX follows the torch engine's p(fake)."""
    from engines.onnx_backend import onnx_engine_for

    engine = build_engine(f"{arch}-ffpp", weights_file=files[arch])
    ort_engine = onnx_engine_for(engine, tmp_path)
    torch_p = engine_p[arch]  # the same file in the torch engine (`{arch}-dfdc`: the entries differ in name only)
    assert torch_p.std() > MIN_SPREAD
    ort_p = np.concatenate([ort_engine.predict(crops[:1]), ort_engine.predict(crops[1:])])
    print(f"{arch}: ORT vs torch max |diff| {np.abs(ort_p - torch_p).max():.2e}")
    np.testing.assert_allclose(ort_p, torch_p, atol=TOL, rtol=0)


@pytest.mark.xfail(strict=False, reason="measured on random weights: int8 max |diff| 0.29, decision agreement 1.0 on "
                                       "7 crops, the same 7 calibrating (2026-12-07; 0.44 and 0.67 on 21 crops, 8 "
                                       "calibrating, before); to be rechecked with the published weights")
def test_int8_follows_fp32(engines, crops, tmp_path):
    from engines.quantize import agreement, quantize_engine

    engine = engines["effb4att"]
    int8 = quantize_engine(engine, crops, tmp_path)
    stats = agreement(engine, int8, crops)  # one batch: the fp32 engine's graph for it is already frozen
    print(f"effb4att int8 vs fp32: {stats}")
    assert stats["max_abs_diff"] < 0.25 and stats["decision_agreement"] >= 0.75


def test_tensorrt_fp16(files, crops, tmp_path):
    from engines.backends import prepare
    from engines.tensorrt_backend import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"TensorRT fp16 needs a GPU with TensorRT: {reason}")
    engine = build_engine("effb4-dfdc", weights_file=files["effb4"], device="cuda")
    trt = prepare(engine, "tensorrt", "fp16", cache_dir=tmp_path)
    np.testing.assert_allclose(trt.predict(crops), engine.predict(crops), atol=2e-2)


# ---------------------------------------------------------------- bad files


def test_wrong_architecture_names_the_missing_attention(files):
    with pytest.raises(WeightsFormatError, match=r"effb4\.pth: does not match EfficientNetAutoAttB4.*missing keys "
                                                 r"\(2\): efficientnet\.attconv\.weight, efficientnet\.attconv\.bias"):
        build_engine("effb4att-dfdc", weights_file=files["effb4"])


def test_wrong_architecture_st_file_in_plain_network(files):
    with pytest.raises(WeightsFormatError, match=r"does not match EfficientNetB4 .*unexpected keys.*feat_ext\."):
        build_engine("effb4-dfdc", weights_file=files["effb4st"])


def test_missing_key(refs, tmp_path):
    state = {k: v for k, v in refs["effb4st"].state_dict().items() if k != "classifier.0.running_mean"}
    torch.save(state, tmp_path / "st.pth")
    with pytest.raises(WeightsFormatError, match=r"st\.pth.*missing keys \(1\): classifier\.0\.running_mean"):
        build_engine("effb4st-dfdc", weights_file=tmp_path / "st.pth")


def test_wrong_shape(refs, tmp_path):
    state = dict(refs["effb4"].state_dict()) | {"classifier.weight": torch.zeros(2, 1792)}
    torch.save(state, tmp_path / "two.pth")
    with pytest.raises(WeightsFormatError, match=r"classifier\.weight: file \(2, 1792\) vs model \(1, 1792\)"):
        build_engine("effb4-dfdc", weights_file=tmp_path / "two.pth")


def test_truncated_file(files, tmp_path):
    data = files["effb4"].read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsFormatError, match=r"cut\.pth: not a readable torch checkpoint"):
        build_engine("effb4-dfdc", weights_file=tmp_path / "cut.pth")


def test_tampered_file_with_published_name(files, tmp_path):
    name = get_entry("effb4-dfdc").weights.filename
    (tmp_path / name).write_bytes(files["effb4"].read_bytes())  # a loadable file, but not the published one
    with pytest.raises(ChecksumMismatch, match="file name says c9f3663e"):
        build_engine("effb4-dfdc", weights_file=tmp_path / name)
    with pytest.raises(ChecksumMismatch, match="sha256"):  # and through the weights folder
        build_engine("effb4-dfdc", weights_dir=tmp_path, allow_download=False)


def test_folder_is_refused(tmp_path):
    with pytest.raises(WeightsFormatError, match="is a folder"):
        build_engine("effb4-dfdc", weights_file=tmp_path)


def test_offline_fetch_names_the_published_address(tmp_path):
    with pytest.raises(WeightsUnavailable, match="f002.backblazeb2.com/file/icpr2020/EfficientNetB4ST_FFPP_bestval-"):
        fetch(get_entry("effb4st-ffpp").weights, tmp_path, allow_download=False)


def test_registry_rows():
    names = [f"{a}-{d}" for a in ARCHS for d in ("dfdc", "ffpp")] + ["effb4-ensemble-dfdc", "effb4-ensemble-ffpp"]
    for name in names:
        entry = MODELS[name]
        assert entry.hash_status == "sha256 pinned" and entry.licence and entry.trained_on and entry.paper
        w = entry.weights
        assert w.url.endswith(w.filename) and w.sha256 in w.filename
        assert entry.input.size == SIZE and entry.input.margin == MARGIN


# -- efficientnet_pytorch's private parts (engines/efficientnet_compat.py) ----------------------------------------

def test_the_installed_efficientnet_pytorch_has_every_part_the_networks_read():
    from engines import efficientnet_compat

    assert efficientnet_pytorch.__version__ == efficientnet_compat.CHECKED_VERSION
    efficientnet_compat.check(EfficientNet.from_name("efficientnet-b4"))


@pytest.mark.parametrize("part", ["_blocks", "_swish", "_avg_pooling", "_global_params"])
def test_a_network_missing_a_part_is_refused_by_name(part):
    from engines.efficientnet_compat import EfficientNetIncompatible, check

    net = EfficientNet.from_name("efficientnet-b4")
    delattr(net, part)  # what a release that renamed or dropped it would give
    with pytest.raises(EfficientNetIncompatible, match=rf"efficientnet_pytorch 0\.7\.1 has no EfficientNet\.{part}"
                                                        r".*checked against 0\.7\.1.*pyproject\.toml"):
        check(net)


def test_blocks_without_the_drop_connect_keyword_are_refused():
    from engines.efficientnet_compat import EfficientNetIncompatible, check

    net = EfficientNet.from_name("efficientnet-b4")
    block = net._blocks[0]
    block.forward = lambda inputs: inputs  # a release whose blocks no longer take drop_connect_rate
    with pytest.raises(EfficientNetIncompatible, match="MBConvBlock.forward"):
        check(net)


def test_building_an_icpr_network_checks_the_package(monkeypatch, refs, tmp_path):
    """The check runs on every build: a package whose EfficientNet lacks `_bn1` refuses to build effb4, with the
    one-line reason the command line prints, before any weights are read into it."""
    from engines.efficientnet_compat import EfficientNetIncompatible

    path = tmp_path / "effb4.pth"
    torch.save(refs["effb4"].state_dict(), path)
    real_init = EfficientNet.__init__

    def without_bn1(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        del self._bn1

    monkeypatch.setattr(EfficientNet, "__init__", without_bn1)
    with pytest.raises(EfficientNetIncompatible, match=r"has no EfficientNet\._bn1"):
        build_engine("effb4-ffpp", weights_file=path)
