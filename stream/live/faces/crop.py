"""Cut square face crops at each engine's own size and margin (256 MesoNet, 299 Xception, 224 VideoMAE).

Crops come from the full-resolution frame only (never the detector's downscaled copy), and each copies only its
own square: a `Picture` hands out the square's pixels (`region`), black where it leaves the frame, and PIL resizes
that. The result is the same, pixel for pixel, as cropping the whole frame with PIL, without the whole-frame copy
that `Image.fromarray(frame)` makes for every crop size of every face.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from stream.live.sources.picture import Picture, as_picture

RESAMPLE = Image.BILINEAR


def square_box(box: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """A square around the face box's centre, its side the box's longer side grown by `margin` on each side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    left, top = round(cx - side / 2.0), round(cy - side / 2.0)
    side_px = max(1, round(side))
    return left, top, left + side_px, top + side_px


def crop_faces(image: Picture | np.ndarray, boxes: Sequence[np.ndarray], size: int, margin: float) -> np.ndarray:
    """Crops of `boxes` (frame pixels) from an RGB frame or a picture, as uint8 (N, size, size, 3). Parts outside
    the frame are black."""
    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    if not len(boxes):
        return out
    picture = as_picture(image)
    for k, box in enumerate(boxes):
        square = Image.fromarray(picture.region(*square_box(box, margin)))
        out[k] = np.asarray(square.resize((size, size), RESAMPLE))
    return out


def whole_frame(image: np.ndarray, size: int) -> np.ndarray:
    """The whole frame resized to (1, size, size, 3): for already-cropped faces and whole-image models."""
    return np.asarray(Image.fromarray(image).resize((size, size), RESAMPLE))[None]
