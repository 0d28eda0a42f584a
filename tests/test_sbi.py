"""Self-blended images on real CelebA-HQ faces with their real MTCNN landmarks."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from PIL import Image

from support.shared import SHARED
from stream.jobs.sbi import BLEND_RATIOS, FAKE, self_blend

FACES = sorted((SHARED / "data" / "faces" / "celeba-hq").glob("*.jpg"))
FACE_COUNT = 3  # a few real faces, different people
SEEDS = (0, 1, 2)
MIN_CHANGED_INSIDE = 0.5  # at least this share of the pixels where the source dominates must change
MIN_MEAN_CHANGE = 2.0  # mean absolute change there, in 0..255 levels


@functools.lru_cache(maxsize=1)
def faces_with_landmarks() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    from stream.live.faces import FaceDetector

    detector = FaceDetector()
    out = []
    for path in FACES[:: max(1, len(FACES) // FACE_COUNT)][:FACE_COUNT]:
        image = np.asarray(Image.open(path).convert("RGB"))
        best = max(detector.detect([image])[0], key=lambda d: d.prob)
        out.append((image, best.landmarks))
    return tuple(out)


@pytest.mark.parametrize("seed", SEEDS)
def test_blend_changes_the_face_covers_it_and_leaves_the_rest_exactly(seed):
    for image, landmarks in faces_with_landmarks():
        sbi = self_blend(image, landmarks, np.random.default_rng(seed))
        assert sbi.label == FAKE and sbi.blend in BLEND_RATIOS
        assert sbi.image.shape == image.shape and sbi.image.dtype == np.uint8
        assert sbi.mask.shape == image.shape[:2] and 0.0 <= sbi.mask.min() and sbi.mask.max() <= sbi.blend + 1e-6
        outside = sbi.mask == 0
        assert outside.any() and np.array_equal(sbi.image[outside], image[outside])
        # the mask covers the face: every landmark lies where the mask is more than half its strength
        shape = sbi.mask / sbi.blend
        for x, y in np.round(landmarks).astype(int):
            assert shape[y, x] > 0.5, (x, y, shape[y, x])
        inside = shape > 0.5
        change = np.abs(sbi.image.astype(np.int16) - image.astype(np.int16))[inside]
        assert change.any(axis=-1).mean() > MIN_CHANGED_INSIDE and change.mean() > MIN_MEAN_CHANGE


def test_the_same_seed_gives_the_same_image_and_another_seed_does_not():
    image, landmarks = faces_with_landmarks()[0]
    a, b = self_blend(image, landmarks, 7), self_blend(image, landmarks, 7)
    c = self_blend(image, landmarks, 8)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.mask, c.mask)


def test_68_point_landmarks_use_their_hull_and_bad_input_is_refused():
    image, landmarks = faces_with_landmarks()[0]
    # 68 points stand-in: the 5 real landmarks and points on the circle through them around their centre
    centre = landmarks.mean(axis=0)
    radius = np.linalg.norm(landmarks - centre, axis=1).max()
    angles = np.linspace(0, 2 * np.pi, 63, endpoint=False)
    points = np.concatenate([landmarks, centre + radius * np.c_[np.cos(angles), np.sin(angles)]])
    sbi = self_blend(image, points, 0)
    assert np.array_equal(sbi.image[sbi.mask == 0], image[sbi.mask == 0])
    assert (sbi.mask / sbi.blend)[int(centre[1]), int(centre[0])] > 0.5
    with pytest.raises(ValueError, match="landmarks"):
        self_blend(image, landmarks[:4], 0)
    with pytest.raises(ValueError, match="RGB uint8"):
        self_blend(image.astype(np.float32), landmarks, 0)
