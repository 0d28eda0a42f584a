"""Settings of one training run, with each kind's defaults taken from its seed card."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stream.jobs.train import KINDS, TrainError
from stream.jobs.train.tracking import DEFAULT_EMISSIONS_COUNTRY

DEFAULT_VIDEOMAE_INIT = "MCG-NJU/videomae-base-finetuned-kinetics"  # card 001: VideoMAE from Kinetics-400
DEFAULT_VAL_FRACTION = 0.2

# None means "not given"; each kind fills what it uses. Sources:
# - logreg, card 000: 10 face-frames per video, uniformly spread; 299² crops.
# - xception, card 003: Adam, lr 1e-3, batch 32, 10 epochs, keep the best validation accuracy.
# - lstm, card 002: TIME_STEPS 30 at 299²; the card gives no optimiser, so Adam 1e-4 (ours).
# - videomae, card 001: Adam, lr 1e-4 with decay, batch 32, 20-30 epochs, frozen backbone first, early stopping.
# fps None for the clip kinds means every frame: clips are consecutive frames, as the cards trained them.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "logreg": dict(size=299, fps=1.0, per_video=10),
    "xception": dict(size=299, fps=1.0, per_video=10, epochs=10, batch_size=32, lr=1e-3, select="accuracy"),
    "lstm": dict(size=299, fps=None, per_video=4, epochs=10, batch_size=16, lr=1e-4, select="auc"),
    "videomae": dict(size=None, fps=None, per_video=4, epochs=20, batch_size=32, lr=1e-4, select="auc",
                     patience=5, freeze_epochs=1, lr_decay=0.9),
}
UNSET_DEFAULTS = dict(patience=0, freeze_epochs=0, lr_decay=1.0)


@dataclass(frozen=True)
class TrainConfig:
    kind: str
    dataset: Path
    out: Path
    seed: int = 0
    sbi: bool = False
    resume: bool = False
    # data
    val_fraction: float = DEFAULT_VAL_FRACTION
    size: int | None = None
    fps: float | None = None
    per_video: int | None = None  # face-frames (frame kinds) or clips (clip kinds) kept per video
    faces: Literal["mtcnn", "none"] = "mtcnn"
    cache_dir: Path | None = None
    no_cache: bool = False
    # optimisation (torch kinds)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    select: Literal["accuracy", "auc"] | None = None
    patience: int | None = None  # epochs without improvement before stopping; 0 = never stop early
    workers: int = 0
    device: str | None = None
    # backbone (logreg, lstm)
    backbone_weights: Path | None = None
    weights_dir: Path | None = None
    offline: bool = False
    # logreg
    grid: Literal["full", "small"] = "full"
    jobs: int = 1
    # lstm
    steps: int = 30
    finetune: bool = False
    # videomae
    init: str = DEFAULT_VIDEOMAE_INIT
    freeze_epochs: int | None = None
    lr_decay: float | None = None
    # output
    mlflow: bool = False
    mlflow_experiment: str = "dfstream-train"
    track_emissions: bool = False
    emissions_country: str = DEFAULT_EMISSIONS_COUNTRY
    progress: bool = True

    def resolved(self) -> TrainConfig:
        """The config with the kind's defaults filled in, checked."""
        if self.kind not in KINDS:
            raise TrainError(f"unknown kind {self.kind!r}; choose from {', '.join(KINDS)}")
        if self.seed < 0:
            raise TrainError(f"--seed must be >= 0, got {self.seed}")
        fill = {k: v for k, v in {**UNSET_DEFAULTS, **KIND_DEFAULTS[self.kind]}.items()
                if getattr(self, k) is None}
        cfg = dataclasses.replace(self, **fill)
        for name in ("epochs", "batch_size", "per_video", "steps"):
            value = getattr(cfg, name)
            if value is not None and value < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if cfg.lr is not None and cfg.lr <= 0:
            raise TrainError(f"--lr must be positive, got {cfg.lr}")
        return cfg

    def public(self) -> dict[str, Any]:
        """JSON-ready settings, for metrics.json and the tracker."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()
                if k != "progress"}
