"""How good a face is to judge: its size in source pixels and its sharpness, measured on every face-frame.

Sharpness is the variance of the Laplacian of the face's grayscale crop at a fixed size (`QUALITY_CROP`), the
usual focus measure: blur, heavy compression and upsampled small faces all lower it. A fixed crop size makes the
number comparable across cameras and engines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUALITY_CROP = (128, 0.0)  # (size, margin): the face box alone, at a fixed size
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 weights


def face_px(box) -> float:
    """The face's short side in source pixels."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return max(0.0, min(x2 - x1, y2 - y1))


def sharpness(crop: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a uint8 RGB crop's luma."""
    g = crop.astype(np.float32) @ LUMA
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


@dataclass(frozen=True, slots=True)
class FaceQuality:
    face_px: float
    sharpness: float

    def to_message(self) -> dict[str, float]:
        return {"face_px": round(self.face_px, 1), "sharpness": round(self.sharpness, 1)}


def measure(box, quality_crop: np.ndarray) -> FaceQuality:
    return FaceQuality(face_px(box), sharpness(quality_crop))
