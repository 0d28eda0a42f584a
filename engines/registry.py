"""The named models the product can run: architecture, weights, input spec and label mapping for each.

A registry entry is data; `build_engine` turns it into an `Engine` by looking the architecture up in
`ARCHITECTURES`, whose builders are imported lazily so `scan --model meso4-df` never imports TensorFlow,
transformers or any architecture it does not use.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from engines.base import Engine, InputSpec, LabelMapping
from engines.weights import WeightsSource, fetch

MESONET_BASE_URL = "https://raw.githubusercontent.com/DariusAf/MesoNet/master/weights/"
DEFAULT_THRESHOLD = 0.5


class ModelEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    architecture: str
    card: str | None = None
    description: str
    weights: WeightsSource
    input: InputSpec
    labels: LabelMapping
    threshold: float = DEFAULT_THRESHOLD


# architecture name -> "module:function"; the function is build(weights_path, entry, device) -> Engine.
ARCHITECTURES: dict[str, str] = {
    "meso4": "engines.mesonet:build_meso4",
    "mesoinception4": "engines.mesonet:build_mesoinception4",
    "xception_140k": "engines.xception_140k:build_xception_140k",
}

# MesoNet: RGB 256x256 in [0, 1]; the sigmoid is p(real) (df=0, real=1 in its training folders).
_MESO_INPUT = InputSpec(size=256, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), margin=0.2)
_MESO_LABELS = LabelMapping(kind="sigmoid", positive="real")


def _meso(name: str, arch: str, filename: str, sha256: str, trained_on: str) -> ModelEntry:
    return ModelEntry(
        name=name,
        architecture=arch,
        description=f"MesoNet {arch} (Afchar et al. 2018) trained on {trained_on}",
        weights=WeightsSource(filename=filename, url=MESONET_BASE_URL + filename, sha256=sha256),
        input=_MESO_INPUT,
        labels=_MESO_LABELS,
    )


MODELS: dict[str, ModelEntry] = {
    m.name: m
    for m in [
        _meso("meso4-df", "meso4", "Meso4_DF.h5",
              "036ed30d04ffd9c7506f825b97c86aa64915f5818931da96817b169aad790af5", "Deepfakes"),
        _meso("meso4-f2f", "meso4", "Meso4_F2F.h5",
              "bcfda015d217b9f8d6557693edbdf9f4e79cfd22672541968dd0e2954462b5d7", "Face2Face"),
        _meso("mesoinception-df", "mesoinception4", "MesoInception_DF.h5",
              "234586d40058e76ef8b6f27ca4b63c06e31c2a5a69c0d8ba6f30b1468ab7bafa", "Deepfakes"),
        _meso("mesoinception-f2f", "mesoinception4", "MesoInception_F2F.h5",
              "d4533ac8a3197dc35c47405d23d99e888c1d0135e267e03540c7451feaccff3f", "Face2Face"),
        ModelEntry(
            name="xception-140k",
            architecture="xception_140k",
            card="003",
            description="Xception (Chollet 2017) trained from scratch on 140k Real and Fake Faces (StyleGAN fakes)",
            # sha256 not published and the hub is unreachable here: unverified until someone records it.
            weights=WeightsSource(filename="best_xception.pth", hf_repo="RamadhanZome/deepfake-xception", sha256=None),
            # RGB 299x299 scaled to [-1, 1]; 2-way logits, index 0 = fake, 1 = real.
            input=InputSpec(size=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
            labels=LabelMapping(kind="softmax", fake_index=0, logits=True),
        ),
    ]
}

DEFAULT_MODEL = "meso4-df"


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return f"unknown model {self.args[0]!r}; known models: {', '.join(sorted(MODELS))}"


def get_entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModel(name) from None


def _builder(architecture: str):
    module_name, func = ARCHITECTURES[architecture].split(":")
    return getattr(importlib.import_module(module_name), func)


def build_engine(
    name: str,
    weights_dir: Path | None = None,
    weights_file: Path | None = None,
    device: str = "cpu",
    allow_download: bool = True,
) -> Engine:
    """Build the named engine from verified weights (or from `weights_file`, used as given, unverified)."""
    entry = get_entry(name)
    path = Path(weights_file) if weights_file else fetch(entry.weights, weights_dir, allow_download)
    return _builder(entry.architecture)(path, entry, device)
