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
from engines.quality import QualityFloor
from engines.weights import WeightsSource, fetch, sha256_of

MESONET_BASE_URL = "https://raw.githubusercontent.com/DariusAf/MesoNet/master/weights/"
# Keras' ImageNet Xception without top, the file `keras.applications.Xception(weights="imagenet",
# include_top=False)` fetches. Keras publishes only an md5 for it (`file_hash` in keras/src/applications/xception.py).
XCEPTION_NOTOP_FILENAME = "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
XCEPTION_NOTOP_URL = "https://storage.googleapis.com/tensorflow/keras-applications/xception/" + XCEPTION_NOTOP_FILENAME
XCEPTION_NOTOP_MD5 = "b0042744bf5b25fce3cb969f33bebb97"
# Keras' xception.preprocess_input: x / 127.5 - 1 = (x/255 - 0.5) / 0.5.
_KERAS_XCEPTION_INPUT = InputSpec(size=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
CARD002_TIME_STEPS = 30  # the card's commented default; the builder uses the file's own TIME_STEPS
DEFAULT_THRESHOLD = 0.5


class ModelEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    architecture: str
    card: str | None = None
    description: str
    weights: WeightsSource
    # Further files a model needs, by role (xception-logreg: "backbone"). build_engine fetches them from the same
    # weights folder and passes the builder `extra_paths={role: path}`; `weights` stays the file `--weights` swaps.
    extra_weights: dict[str, WeightsSource] = {}
    input: InputSpec
    labels: LabelMapping
    threshold: float = DEFAULT_THRESHOLD
    quality: QualityFloor = QualityFloor()  # below it the engine's score is not used (low-quality)


# architecture name -> "module:function"; the function is build(weights_path, entry, device) -> Engine.
ARCHITECTURES: dict[str, str] = {
    "meso4": "engines.mesonet:build_meso4",
    "mesoinception4": "engines.mesonet:build_mesoinception4",
    "xception_140k": "engines.xception_140k:build_xception_140k",
    "videomae": "engines.videomae:build_videomae",
    "xception_lstm": "engines.xception_lstm:build_xception_lstm",
    "xception_logreg": "engines.xception_logreg:build_xception_logreg",
}

# MesoNet: RGB 256x256 in [0, 1]; the sigmoid is p(real) (df=0, real=1 in its training folders).
_MESO_INPUT = InputSpec(size=256, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), margin=0.2)
_MESO_LABELS = LabelMapping(kind="sigmoid", positive="real")


# Quality floors from `benchmarks/robustness.py` on the seven shared FF++ clips at 18 re-encodings (2026-12-01):
# real faces under 96 px get p(fake) 0.77-0.96 from the Deepfakes-trained files (93-100 % false alarms), which is
# what a 640x360 webcam gives (faces of ~66 px); above 96 px no further size helps. The Face2Face files' false
# alarms stay 0-17 % at every size, so they get only a sanity floor. No sharpness floor: sharpness tracks face
# size here, and a floor on it would also gate a third of the untouched originals.
_MESO_FLOOR_SOURCE = "benchmarks/robustness.py, shared FF++ clips, 2026-12-01"
_MESO_FLOORS = {"meso4-df": 96, "mesoinception-df": 96, "meso4-f2f": 64, "mesoinception-f2f": 64}


def _meso(name: str, arch: str, filename: str, sha256: str, trained_on: str) -> ModelEntry:
    return ModelEntry(
        quality=QualityFloor(min_face_px=_MESO_FLOORS[name], source=_MESO_FLOOR_SOURCE),
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
        ModelEntry(
            name="videomae",
            architecture="videomae",
            card="001",
            description="VideoMAE (Tong et al. 2022) from Kinetics-400, fine-tuned real/fake on FF++ 16-frame clips",
            # The card names no hub repo: the authors' HF checkpoint folder (or a hub id) comes with --weights.
            weights=WeightsSource(
                filename="videomae-ffpp", hf_repo=None, sha256=None,
                hint="Card 001 publishes no download: pass the authors' Hugging Face checkpoint folder "
                     "(config.json + model.safetensors) or its hub id with --weights.",
            ),
            # Defaults only: the engine takes size and clip length from config.json, mean/std from
            # preprocessor_config.json, and the fake index from config.id2label.
            input=InputSpec(size=224, frames=16, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
            labels=LabelMapping(kind="softmax", fake_index=1, logits=True),
        ),
        ModelEntry(
            name="xception-lstm",
            architecture="xception_lstm",
            card="002",
            description="TimeDistributed Keras Xception + LSTM(256) over face-frame sequences, trained on "
                        "FaceForensics++ and Celeb-DF v2",
            # The card names the file but publishes no address (no URL, no hub repo) and no hash.
            weights=WeightsSource(
                filename="COMBINED_best_Phase1.keras",
                hint="Seed card 002 names COMBINED_best_Phase1.keras but publishes no download address: get the "
                     "Keras file from the card's authors (a full-model .h5 of the same model also loads), or pass "
                     "--weights FILE.",
            ),
            # Frames and size are overridden by the file's config (its Input shape).
            input=InputSpec(size=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), frames=CARD002_TIME_STEPS),
            # Dense(2, softmax) over the card's class_names = ['Real', 'Fake']: index 1 is p(fake).
            labels=LabelMapping(kind="softmax", fake_index=1),
        ),
        ModelEntry(
            name="xception-logreg",
            architecture="xception_logreg",
            card="000",
            description="Keras ImageNet Xception features (frozen) + StandardScaler + LogisticRegression, per frame",
            # The card publishes no trained head; `dfstream train logreg` fits one and writes this file.
            weights=WeightsSource(
                filename="xception_logreg_head.npz",
                hint="Seed card 000 publishes no trained head: fit one on your labelled face crops with "
                     "`dfstream train logreg` (engines/xception_logreg.py save_head writes the file), or pass "
                     "--weights FILE.",
            ),
            extra_weights={"backbone": WeightsSource(filename=XCEPTION_NOTOP_FILENAME, url=XCEPTION_NOTOP_URL,
                                                     md5=XCEPTION_NOTOP_MD5)},
            input=_KERAS_XCEPTION_INPUT,
            # The head outputs the logit of the fake class (its sign is fixed from the file's classes_).
            labels=LabelMapping(kind="sigmoid", positive="fake", logits=True),
        ),
    ]
}

# Chosen by measurement (benchmarks/robustness.py and scan on the shared FF++ clips, 2026-12-01): meso4-f2f's
# false alarms on real faces stay at 0-17 % across resolutions, compression and the WebRTC path, and it flags none
# of the three shared real clips, where meso4-df is below chance (AUC 0.33) and calls half the real faces fake.
DEFAULT_MODEL = "meso4-f2f"


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


def weights_digest(path: Path) -> str:
    """The sha256 a calibration is tied to: the file's, or for a checkpoint folder (VideoMAE, GenD) the sha256 of
    its files' names and hashes in order."""
    path = Path(path)
    if not path.is_dir():
        return sha256_of(path)
    import hashlib

    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(path).as_posix()}:{sha256_of(f)}\n".encode())
    return digest.hexdigest()


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
    builder = _builder(entry.architecture)
    if not entry.extra_weights:
        engine = builder(path, entry, device)
    else:
        extra = {role: fetch(source, weights_dir, allow_download) for role, source in entry.extra_weights.items()}
        engine = builder(path, entry, device, extra_paths=extra)
    engine.quality = entry.quality
    engine.weights_path = path  # calibration files are tied to these weights by their sha256
    engine.weights_sha256 = weights_digest(path)
    return engine
