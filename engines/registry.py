"""The named models the product can run: architecture, weights, input spec and label mapping for each.

A registry entry is data; `build_engine` turns it into an `Engine` by looking the architecture up in
`ARCHITECTURES`, whose builders are imported lazily so `scan --model meso4-df` never imports TensorFlow,
transformers or any architecture it does not use.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from engines import aasist, hf_audio
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
    # Files that sit beside `weights` in its folder and travel with it (GenD: config.json next to model.safetensors).
    # build_engine fetches them with `weights`; a `--weights` folder or file brings its own.
    companion_files: dict[str, WeightsSource] = {}
    input: InputSpec
    labels: LabelMapping
    threshold: float = DEFAULT_THRESHOLD
    quality: QualityFloor = QualityFloor()  # below it the engine's score is not used (low-quality)
    # What `models list` shows besides the card: the paper (or model card) a model comes from, the data it was
    # trained on, the weights' licence, and the backends it has been checked on (torch, onnx, int8, tensorrt).
    paper: str | None = None
    trained_on: str | None = None
    licence: str | None = None
    backends: tuple[str, ...] = ()

    @property
    def hash_status(self) -> str:
        """'sha256 pinned' / 'md5 pinned' / 'unverified' for the model's files; per file when they differ."""
        statuses = {"weights": self.weights.hash_status} | {
            r: s.hash_status for r, s in (self.companion_files | self.extra_weights).items()}
        if len(set(statuses.values())) == 1:
            return statuses["weights"]
        return "; ".join(f"{role} {status}" for role, status in statuses.items())


# architecture name -> "module:function"; the function is build(weights_path, entry, device) -> Engine.
ARCHITECTURES: dict[str, str] = {
    "meso4": "engines.mesonet:build_meso4",
    "mesoinception4": "engines.mesonet:build_mesoinception4",
    "xception_140k": "engines.xception_140k:build_xception_140k",
    "videomae": "engines.videomae:build_videomae",
    "xception_lstm": "engines.xception_lstm:build_xception_lstm",
    "xception_logreg": "engines.xception_logreg:build_xception_logreg",
    "effb4": "engines.efficientnet_b4:build_effb4",
    "effb4st": "engines.efficientnet_b4:build_effb4st",
    "effb4att": "engines.efficientnet_b4:build_effb4att",
    "effb4attst": "engines.efficientnet_b4:build_effb4attst",
    "effb4_ensemble": "engines.efficientnet_b4:build_ensemble",
    "gend": "engines.gend:build_gend",
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


MESO_PAPER = ("Afchar et al., 'MesoNet: a Compact Facial Video Forgery Detection Network', WIFS 2018 "
              "(github.com/DariusAf/MesoNet)")
MESO_LICENCE = "Apache-2.0 (DariusAf/MesoNet)"


def _meso(name: str, arch: str, filename: str, sha256: str, trained_on: str) -> ModelEntry:
    return ModelEntry(
        quality=QualityFloor(min_face_px=_MESO_FLOORS[name], source=_MESO_FLOOR_SOURCE),
        name=name,
        architecture=arch,
        description=f"MesoNet {arch} (Afchar et al. 2018) trained on {trained_on}",
        weights=WeightsSource(filename=filename, url=MESONET_BASE_URL + filename, sha256=sha256),
        input=_MESO_INPUT,
        labels=_MESO_LABELS,
        paper=MESO_PAPER,
        trained_on=trained_on,
        licence=MESO_LICENCE,
        backends=("torch", "onnx", "int8"),
    )


MODELS: dict[str, ModelEntry] = {
    m.name: m
    for m in [
        _meso("meso4-df", "meso4", "Meso4_DF.h5",
              "036ed30d04ffd9c7506f825b97c86aa64915f5818931da96817b169aad790af5", "the authors' Deepfake videos"),
        _meso("meso4-f2f", "meso4", "Meso4_F2F.h5",
              "bcfda015d217b9f8d6557693edbdf9f4e79cfd22672541968dd0e2954462b5d7", "FaceForensics Face2Face"),
        _meso("mesoinception-df", "mesoinception4", "MesoInception_DF.h5",
              "234586d40058e76ef8b6f27ca4b63c06e31c2a5a69c0d8ba6f30b1468ab7bafa", "the authors' Deepfake videos"),
        _meso("mesoinception-f2f", "mesoinception4", "MesoInception_F2F.h5",
              "d4533ac8a3197dc35c47405d23d99e888c1d0135e267e03540c7451feaccff3f", "FaceForensics Face2Face"),
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
            trained_on="140k Real and Fake Faces (FFHQ real, StyleGAN fake; Kaggle xhlulu)",
            licence="MIT (card 003)",
            backends=("torch", "onnx", "int8"),
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
            trained_on="FaceForensics++ (card 001)",
            licence="not stated by card 001",
            backends=("torch", "onnx"),
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
            trained_on="FaceForensics++ and Celeb-DF v2 (card 002)",
            licence="MIT (card 002)",
            backends=("torch", "onnx"),
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
            trained_on="your own labelled crops (`dfstream train logreg`); card 000 used FaceForensics++",
            licence="not stated by card 000; Keras Xception ImageNet backbone MIT",
            backends=("torch", "onnx"),
        ),
    ]
}

# Chosen by measurement (benchmarks/robustness.py and scan on the shared FF++ clips, 2026-12-01): meso4-f2f's
# false alarms on real faces stay at 0-17 % across resolutions, compression and the WebRTC path, and it flags none
# of the three shared real clips, where meso4-df is below chance (AUC 0.33) and calls half the real faces fake.
DEFAULT_MODEL = "meso4-f2f"
# ---------------------------------------------------------------- ICPR 2020 EfficientNet-B4 family

ICPR_BASE_URL = "https://f002.backblazeb2.com/file/icpr2020/"
ICPR_PAPER = ("Bonettini et al., 'Video Face Manipulation Detection Through Ensemble of CNNs', ICPR 2020 "
              "(github.com/polimi-ispl/icpr2020dfdc)")
ICPR_LICENCE = "GPL-3.0 (the authors' repository, which publishes the weights)"
ICPR_TRAINED_ON = {"dfdc": "DFDC (Deepfake Detection Challenge) training set",
                   "ffpp": "FaceForensics++ c23 (all four manipulations + originals)"}
# The published files, as listed in the authors' architectures/weights.py; each name carries its sha256.
ICPR_FILES = {
    ("effb4", "dfdc"): "EfficientNetB4_DFDC_bestval-c9f3663e2116d3356d056a0ce6453e0fc412a8df68ebd0902f07104d9129a09a.pth",
    ("effb4", "ffpp"): "EfficientNetB4_FFPP_bestval-93aaad84946829e793d1a67ed7e0309b535e2f2395acb4f8d16b92c0616ba8d7.pth",
    ("effb4st", "dfdc"): "EfficientNetB4ST_DFDC_bestval-86f0a0701b18694dfb5e7837bd09fa8e48a5146c193227edccf59f1b038181c6.pth",
    ("effb4st", "ffpp"): "EfficientNetB4ST_FFPP_bestval-ccd016668071be5bf5fff68e446d055441739ec7113fb1a6eee998f08396ae92.pth",
    ("effb4att", "dfdc"):
        "EfficientNetAutoAttB4_DFDC_bestval-72ed969b2a395fffe11a0d5bf0a635e7260ba2588c28683630d97ff7153389fc.pth",
    ("effb4att", "ffpp"):
        "EfficientNetAutoAttB4_FFPP_bestval-b0c9e9522a7143cf119843e910234be5e30f77dc527b1b427cdffa5ce3bdbc25.pth",
    ("effb4attst", "dfdc"):
        "EfficientNetAutoAttB4ST_DFDC_bestval-4df0ef7d2f380a5955affa78c35d0942ac1cd65229510353b252737775515a33.pth",
    ("effb4attst", "ffpp"):
        "EfficientNetAutoAttB4ST_FFPP_bestval-ddb357503b9b902e1b925c2550415604c4252b9b9ecafeb7369dc58cc16e9edd.pth",
}
ICPR_NETWORK_NAMES = {"effb4": "EfficientNetB4", "effb4st": "EfficientNetB4ST", "effb4att": "EfficientNetAutoAttB4",
                      "effb4attst": "EfficientNetAutoAttB4ST"}
# Their `scale` face policy, mapped onto the project's square crops (stream/live/faces/crop.py):
# BlazeFace's box is grown by 0.2 x its height on the left, right and bottom and 0.4 x on top, then cut as a
# square as large as the grown box's longer side around its centre, then resized to 224 (PIL bilinear). For a face
# box taller than wide (the usual case) that square's side is 1.6 x the box height, i.e. margin 0.3 on each side
# here, and the same bilinear resize. Not reproduced: (1) their square sits 0.1 x box height higher (the extra top
# margin), (2) at the frame's edge they clip the square (then stretch it to 224) where crop_faces pads with black,
# (3) MTCNN's boxes, which this project detects with, are not BlazeFace's. A crop mode with a vertical offset and
# edge clipping would close (1) and (2); it belongs in stream/live/faces/crop.py.
ICPR_INPUT = InputSpec(size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), margin=0.3)
ICPR_LABELS = LabelMapping(kind="sigmoid", positive="fake", logits=True)  # one logit, label 1 = fake
# TensorRT fp16 is built by benchmarks/gpu_check.sh on a CUDA machine; it joins this list once that has run.
ICPR_BACKENDS = ("torch", "onnx", "int8")


def icpr_source(arch: str, dataset: str) -> WeightsSource:
    filename = ICPR_FILES[(arch, dataset)]
    sha = filename.rsplit("-", 1)[1].removesuffix(".pth")
    return WeightsSource(filename=filename, url=ICPR_BASE_URL + filename, sha256=sha)


def _icpr(arch: str, dataset: str) -> ModelEntry:
    network = ICPR_NETWORK_NAMES[arch]
    return ModelEntry(
        name=f"{arch}-{dataset}",
        architecture=arch,
        description=f"{network} (ICPR 2020), 224^2 face crops, one logit (sigmoid = p(fake)), trained on "
                    f"{dataset.upper()}",
        weights=icpr_source(arch, dataset),
        input=ICPR_INPUT,
        labels=ICPR_LABELS,
        paper=ICPR_PAPER,
        trained_on=ICPR_TRAINED_ON[dataset],
        licence=ICPR_LICENCE,
        backends=ICPR_BACKENDS,
    )


def _icpr_ensemble(dataset: str) -> ModelEntry:
    """The paper's headline: B4 + B4ST + AutoAttB4 + AutoAttB4ST, logits averaged then sigmoid (plain mean)."""
    return ModelEntry(
        name=f"effb4-ensemble-{dataset}",
        architecture="effb4_ensemble",
        description="ICPR 2020 ensemble of EfficientNetB4, B4ST, AutoAttB4 and AutoAttB4ST: mean of the four "
                    f"logits, then sigmoid (plain mean fusion, uncalibrated); trained on {dataset.upper()}",
        weights=icpr_source("effb4", dataset),
        extra_weights={arch: icpr_source(arch, dataset) for arch in ("effb4st", "effb4att", "effb4attst")},
        input=ICPR_INPUT,
        labels=ICPR_LABELS,
        paper=ICPR_PAPER,
        trained_on=ICPR_TRAINED_ON[dataset],
        licence=ICPR_LICENCE,
        backends=ICPR_BACKENDS,
    )


MODELS.update({
    m.name: m
    for m in [
        *(_icpr(arch, dataset) for arch in ICPR_NETWORK_NAMES for dataset in ("dfdc", "ffpp")),
        _icpr_ensemble("dfdc"),
        _icpr_ensemble("ffpp"),
    ]
})

# ---------------------------------------------------------------- GenD (WACV 2026)

GEND_PAPER = ("Yermakov, Cech, Matas, Fritz, 'Deepfake Detection that Generalizes Across Benchmarks', WACV 2026 "
              "(arXiv 2508.06248, github.com/yermandy/GenD)")
GEND_LICENCE = "MIT (GenD code and checkpoints); the backbones keep their own licences (DINOv3: Meta's DINOv3 licence)"
GEND_TRAINED_ON = "FaceForensics++ c23 (paired real/fake frames from the official train split)"
# (name, hub repo, pinned revision, model.safetensors sha256, backbone). Only the CLIP repo's revision and LFS hash
# could be learned here (its commit 891ce014 and the LFS oid of model.safetensors, unchanged since the first upload
# 94137254); the other two stay unpinned and unverified until someone records them from the hub.
GEND_REPOS = (
    ("gend-clip-l14", "yermandy/GenD_CLIP_L_14", "891ce014a0308386c4d7d25b3dcf436a22db5504",
     "d76f0bdfd74a29fe1b1c1b84a80ac92486993e426878e8c7a3944281fbb96833", "openai/clip-vit-large-patch14"),
    ("gend-pe-l", "yermandy/GenD_PE_L", None, None, "vit_pe_core_large_patch14_336 (timm)"),
    ("gend-dinov3-l", "yermandy/GenD_DINOv3_L", None, None, "facebook/dinov3-vitl16-pretrain-lvd1689m"),
)
GEND_BACKENDS = ("torch", "onnx")


def _gend(name: str, repo: str, revision: str | None, sha256: str | None, backbone: str) -> ModelEntry:
    folder = repo.split("/", 1)[1]

    def hub(file: str, sha: str | None) -> WeightsSource:
        return WeightsSource(filename=f"{folder}/{file}", remote_name=file, hf_repo=repo, revision=revision,
                             sha256=sha)

    return ModelEntry(
        name=name,
        architecture="gend",
        card=f"huggingface.co/{repo}",
        description=f"GenD: {backbone} with only its LayerNorms fine-tuned, L2-normalised feature, linear 2-way head",
        weights=hub("model.safetensors", sha256),
        companion_files={"config": hub("config.json", None)},
        # Defaults only: the engine takes size, mean and std from the backbone's processor config.
        input=InputSpec(size=224, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
                        margin=0.15),
        labels=LabelMapping(kind="softmax", fake_index=1, logits=True),
        paper=GEND_PAPER,
        trained_on=GEND_TRAINED_ON,
        licence=GEND_LICENCE,
        backends=GEND_BACKENDS,
    )


MODELS.update({m.name: m for m in (_gend(*row) for row in GEND_REPOS)})

# ---------------------------------------------------------------- voice engines (issue 26)
# Declared beside their architectures; built by engines.voices (a voice model is never a face engine).
VOICE_MODELS = {m.name: m for m in (*aasist.ENTRIES, *hf_audio.ENTRIES)}


class UnknownModel(KeyError):
    def __str__(self) -> str:
        if self.args[0] in VOICE_MODELS:
            return f"{self.args[0]!r} is a voice model: score voices with it (--modality voice)"
        return f"unknown model {self.args[0]!r}; known models: {', '.join(sorted(MODELS))} (voice: " \
               f"{', '.join(sorted(VOICE_MODELS))})"


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
    if not weights_file:
        for source in entry.companion_files.values():
            fetch(source, weights_dir, allow_download)
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


def model_files(name: str) -> dict[str, WeightsSource]:
    """Every file a model needs, by role ("weights", companions, extra weights): what `models pull` fetches."""
    if name in VOICE_MODELS:
        return VOICE_MODELS[name].files()
    entry = get_entry(name)
    return {"weights": entry.weights, **entry.companion_files, **entry.extra_weights}


def pull(name: str, weights_dir: Path | None = None, progress: bool = True) -> dict[str, Path]:
    """`models pull NAME`: download (resuming partial files) and verify every file of the model; role -> path."""
    return {role: fetch(source, weights_dir, allow_download=True, progress=progress)
            for role, source in model_files(name).items()}


def model_card(name: str) -> dict[str, str]:
    """The row `models list` prints for a model."""
    if name in VOICE_MODELS:
        return VOICE_MODELS[name].card_row()
    entry = get_entry(name)
    spec = entry.input
    clip = f" x {spec.frames} frames" if spec.frames > 1 else ""
    return {
        "name": entry.name,
        "card / paper": entry.paper or (f"seed card {entry.card}" if entry.card else "-"),
        "trained on": entry.trained_on or "-",
        "licence": entry.licence or "-",
        "input": f"{spec.size}x{spec.size} RGB{clip}, margin {spec.margin:g}",
        "hash": entry.hash_status,
        "backends": ", ".join(entry.backends) if entry.backends else "-",
        "address": entry.weights.address,
    }
