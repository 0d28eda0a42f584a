"""Train/validation splits by video: every face-frame (and every pseudo-fake made from it) of one video lands on
the same side, so validation never sees a face the model was trained on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream.jobs.datasets import FAKE, REAL
from stream.jobs.train import TrainError
from stream.jobs.train.seed import SHUFFLE, rng

MIN_GROUPS_PER_CLASS = 2  # one to train on and one to validate on
CLASS_NAMES = {REAL: "real", FAKE: "fake"}
MAX_CV_FOLDS = 5


def split_groups(groups: Sequence[str], labels: Sequence[int], val_fraction: float, seed: int) -> set[str]:
    """The validation groups: for each class, a seeded shuffle of its groups and the first `val_fraction` of them
    (at least one, and never all). A group's class is its first entry's label (a dataset folder gives one label).

    A class with no groups is skipped (pseudo-fakes are made later from real videos); a class with a single group
    cannot be on both sides and is an error.
    """
    if not 0.0 < val_fraction < 1.0:
        raise TrainError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    first: dict[str, int] = {}
    for g, y in zip(groups, labels):
        first.setdefault(g, int(y))
    val: set[str] = set()
    for label, name in CLASS_NAMES.items():
        mine = sorted(g for g, y in first.items() if y == label)
        if not mine:
            continue
        if len(mine) < MIN_GROUPS_PER_CLASS:
            raise TrainError(f"only {len(mine)} {name} video: validation is split by video, so training needs at "
                             f"least {MIN_GROUPS_PER_CLASS} {name} videos (or image folders)")
        n_val = min(len(mine) - 1, max(1, round(val_fraction * len(mine))))
        order = rng(seed, SHUFFLE, label).permutation(len(mine))
        val.update(mine[i] for i in order[:n_val])
    return val


def val_mask(groups: np.ndarray, val: set[str]) -> np.ndarray:
    return np.isin(groups, sorted(val))


def check_both_classes(real: int, fake: int, where: str, hint: str = "") -> None:
    """Refuse a split that lacks a class: its loss and AUC would mean nothing."""
    for count, name in ((real, "real"), (fake, "fake")):
        if not count:
            raise TrainError(f"the {where} set has no {name} faces ({real} real, {fake} fake samples){hint}")


def cv_folds(labels: np.ndarray, groups: np.ndarray) -> int:
    """Grouped CV folds: at most MAX_CV_FOLDS, and no more than the videos of the smaller class, so that every
    test fold can hold both classes (ROC AUC is undefined otherwise)."""
    per_class = [len(set(groups[labels == y].tolist())) for y in CLASS_NAMES]
    folds = min(MAX_CV_FOLDS, *per_class)
    if folds < 2:
        raise TrainError(f"grouped cross-validation needs at least 2 videos of each class in the training split, "
                         f"got {dict(zip(CLASS_NAMES.values(), per_class))}")
    return folds
