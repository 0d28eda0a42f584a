"""The named models the product can run, and building engines from them.

Each architecture file under `engines/architectures/` declares its own entries beside its network
(`engines.registration`, timm's pattern); importing this module imports every one of them, so `MODELS` holds every
model and `ARCHITECTURES` every builder. Adding a model means editing (or adding) its architecture file only.
Heavy frameworks stay out: an architecture imports transformers, efficientnet_pytorch or scikit-learn only when it
builds an engine.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from pathlib import Path

from engines.base import Engine
from engines.entry import DEFAULT_THRESHOLD, ModelEntry
from engines.registration import ARCHITECTURES, MODELS, VOICE_MODELS, register_architecture, register_models
from engines.weights import WeightsSource, fetch, sha256_of

ARCHITECTURES_PACKAGE = "engines.architectures"
# Chosen by measurement (benchmarks/robustness.py and scan on the shared FF++ clips, 2026-12-01): meso4-f2f's
# false alarms on real faces stay at 0-17 % across resolutions, compression and the WebRTC path, and it flags none
# of the three shared real clips, where meso4-df is below chance (AUC 0.33) and calls half the real faces fake.
DEFAULT_MODEL = "meso4-f2f"

__all__ = ["ARCHITECTURES", "DEFAULT_MODEL", "DEFAULT_THRESHOLD", "MODELS", "ModelEntry", "UnknownModel",
           "build_engine", "discover", "get_entry", "model_card", "model_files", "pull", "register_architecture",
           "register_models", "VOICE_MODELS", "weights_digest"]


def discover(package: str = ARCHITECTURES_PACKAGE) -> list[str]:
    """Import every module of `package` (each registers its models as it is imported); returns their names."""
    root = importlib.import_module(package)
    names = [f"{package}.{m.name}" for m in pkgutil.iter_modules(root.__path__) if not m.name.startswith("_")]
    for name in names:
        importlib.import_module(name)
    return names


discover()

# Names that lived here before the architectures declared their own entries (tests and training import them).
from engines.keras_xception import XCEPTION_NOTOP_FILENAME, XCEPTION_NOTOP_MD5, XCEPTION_NOTOP_URL  # noqa: E402,F401


class UnknownModel(KeyError):
    def __str__(self) -> str:
        if self.args[0] in VOICE_MODELS:
            return f"{self.args[0]!r} is a voice model: score voices with it (--modality voice; serve: --voice-model " \
                   "or voice.models)"
        return f"unknown model {self.args[0]!r}; known models: {', '.join(sorted(MODELS))} (voice: " \
               f"{', '.join(sorted(VOICE_MODELS))})"


def get_entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModel(name) from None


def _builder(entry: ModelEntry):
    try:
        return ARCHITECTURES[entry.architecture]
    except KeyError:
        raise ValueError(f"model {entry.name!r} needs architecture {entry.architecture!r}, which no file registers; "
                         f"registered: {', '.join(sorted(ARCHITECTURES))}") from None


def weights_digest(path: Path) -> str:
    """The sha256 a calibration is tied to: the file's, or for a checkpoint folder (VideoMAE, GenD) the sha256 of
    its files' names and hashes in order."""
    path = Path(path)
    if not path.is_dir():
        return sha256_of(path)
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
    """Build the named engine from verified weights (or from `weights_file`, used as given, unverified), with the
    entry's quality floor and the weights' path and digest (the engine's declared registry facts)."""
    entry = get_entry(name)
    builder = _builder(entry)
    path = Path(weights_file) if weights_file else fetch(entry.weights, weights_dir, allow_download)
    if not weights_file:
        for source in entry.companion_files.values():
            fetch(source, weights_dir, allow_download)
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
