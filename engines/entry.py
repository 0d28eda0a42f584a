"""A registry entry: one named model as data (architecture, weight files, input spec, label mapping, card facts).

Each architecture file declares its own entries (`engines.registration.register_models`); `engines.registry`
builds engines from them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from engines.base import InputSpec, LabelMapping
from engines.quality import QualityFloor
from engines.weights import WeightsSource

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
