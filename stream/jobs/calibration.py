"""Face crops for int8 calibration, cut from the user's own videos or images with the same detector as scan."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stream.live.faces import FaceDetector, crop_faces
from stream.live.sources import AVSource, SourceError

CALIBRATION_FPS = 1.0  # one frame a second spreads the crops over the whole clip
MAX_CALIBRATION_CROPS = 64


def calibration_crops(
    paths: Sequence[Path], size: int, margin: float, limit: int = MAX_CALIBRATION_CROPS,
    detector: FaceDetector | None = None,
) -> np.ndarray:
    """Up to `limit` uint8 face crops (N, size, size, 3) from `paths`; SourceError if none has a face."""
    from PIL import Image

    detector = detector or FaceDetector()
    crops: list[np.ndarray] = []
    for path in paths:
        if Path(path).suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".webp"}:
            frames = [np.asarray(Image.open(path).convert("RGB"))]
        else:
            frames = [f.image for f in AVSource(path, sample_fps=CALIBRATION_FPS).frames()]
        for image, faces in zip(frames, detector.detect(frames)):
            if faces:
                crops.append(crop_faces(image, [d.box for d in faces], size, margin))
        if sum(len(c) for c in crops) >= limit:
            break
    if not crops:
        raise SourceError(f"no faces found for calibration in {', '.join(map(str, paths))}")
    return np.concatenate(crops)[:limit]
