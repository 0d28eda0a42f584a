"""The Keras-ImageNet Xception feature extractor shared by `logreg` (card 000) and `lstm` (card 002).

The real backbone is the registry's "backbone" file of xception-logreg (Keras' ImageNet notop weights, fetched
and md5-checked). `--backbone-weights FILE` swaps in any Xception in a Keras layout `load_xception` reads, or a
torch state dict of `engines.keras_xception.KerasXception` (tests use random weights; the ImageNet file cannot be
downloaded everywhere).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np
import torch

from engines.base import InputSpec, channel_stats, normalise
from engines.keras_xception import FEATURES, KERAS_ZIP_WEIGHTS, KerasXception, load_xception
from engines.loading import load_state_dict_file, load_weights
from engines.architectures.xception_logreg import BACKBONE_ROLE
from stream.jobs.train.config import TrainConfig

FEATURE_BATCH = 16
LOGREG_MODEL = "xception-logreg"


def backbone_path(cfg: TrainConfig) -> Path:
    if cfg.backbone_weights is not None:
        return cfg.backbone_weights
    from engines.registry import get_entry
    from engines.weights import fetch

    return fetch(get_entry(LOGREG_MODEL).extra_weights[BACKBONE_ROLE], cfg.weights_dir, not cfg.offline)


def is_keras_file(path: Path) -> bool:
    """HDF5 (Keras 2 `.h5`, Keras 3 `.weights.h5`) or a `.keras` zip; torch's own zip checkpoints are not."""
    if h5py.is_hdf5(path):
        return True
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return KERAS_ZIP_WEIGHTS in z.namelist()
    return False


def load_backbone(path: Path) -> KerasXception:
    model = KerasXception()
    if is_keras_file(path):
        load_xception(model, path)
    else:
        load_weights(model, load_state_dict_file(path), path)
    return model


class Features:
    """uint8 crops (N, [T,] S, S, 3) -> float32 pooled features (N, [T,] 2048), the frozen backbone in eval mode."""

    def __init__(self, backbone: KerasXception, spec: InputSpec, device: str, batch: int = FEATURE_BATCH) -> None:
        self.backbone = backbone.eval().to(device)
        self.mean, self.std = channel_stats(spec, device)
        self.batch = batch

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(-1, *x.shape[-3:])
        out = np.empty((len(flat), FEATURES), dtype=np.float32)
        for start in range(0, len(flat), self.batch):
            chunk = normalise(flat[start:start + self.batch], self.mean, self.std)
            out[start:start + len(chunk)] = self.backbone(chunk).float().cpu().numpy()
        return out.reshape(*x.shape[:-3], FEATURES)
