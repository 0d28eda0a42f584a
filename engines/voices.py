"""Building the named voice engines: the registry's voice entries, their verified weights, their builders.

The counterpart of `engines.registry.build_engine` for voices. Kept apart so a face path can never be handed a
voice engine (their inputs differ), and so the live audio path and the offline scan build voices the same way.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from engines.registry import DEFAULT_THRESHOLD, VOICE_MODELS, UnknownModel, weights_digest
from engines.voice_base import VoiceEngine, VoiceModelEntry
from engines.weights import fetch

# The voice model `--modality voice` runs when no voice model is named. AASIST over AASIST-L: the same training data
# and input; the full model has the lower published EER (0.83 % vs 0.99 %) and is still light enough for a CPU
# (docs/voices.md has both measured on the shared speech, and their time per window).
DEFAULT_VOICE_MODEL = "aasist"


def is_voice_model(name: str) -> bool:
    return name in VOICE_MODELS


def get_voice_entry(name: str) -> VoiceModelEntry:
    try:
        return VOICE_MODELS[name]
    except KeyError:
        raise UnknownModel(name) from None


def voice_threshold(name: str) -> float:
    return VOICE_MODELS[name].threshold if name in VOICE_MODELS else DEFAULT_THRESHOLD


def build_voice_engine(name: str, weights_dir: Path | None = None, weights_file: Path | str | None = None,
                       device: str = "cpu", allow_download: bool = True) -> VoiceEngine:
    """The named voice engine from verified weights (or from `weights_file`, a file, folder or hub id, unverified).

    The file's digest is recorded on the engine (`weights_sha256`) for calibrations and evidence manifests."""
    entry = get_voice_entry(name)
    if weights_file is not None:
        path = Path(weights_file)
    else:
        path = fetch(entry.weights, weights_dir, allow_download)
        for source in entry.companion_files.values():
            fetch(source, weights_dir, allow_download)
    module_name, func = entry.builder.split(":")
    engine = getattr(importlib.import_module(module_name), func)(path, entry, device)
    engine.weights_sha256 = weights_digest(path) if path.exists() else None
    engine.weights_path = path if path.is_file() else None
    engine.backends = entry.backends
    return engine
