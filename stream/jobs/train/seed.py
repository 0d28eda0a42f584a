"""Fixed seeds. Every random draw in training comes from a seed derived from (run seed, purpose, epoch, index),
so a resumed run replays exactly what an uninterrupted one would have drawn, without saving RNG states."""

from __future__ import annotations

import random

import numpy as np

# Purposes, so the streams of different random decisions never coincide.
SHUFFLE, SBI_TRAIN, SBI_STATIC, SBI_VAL, FLIP, EPOCH = range(6)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA), and pin cuDNN to its deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def derived(seed: int, *keys: int) -> int:
    """A 64-bit seed for (seed, *keys): numpy's SeedSequence mixes them, so nearby keys give unrelated streams."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0])


def rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])
