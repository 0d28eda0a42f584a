"""Where a Grad-CAM map peaks, in words: eyes, nose, mouth, face boundary or background, from MTCNN's landmarks.

MTCNN gives five points (left eye, right eye, nose, left and right mouth corner). From them: a disc around each eye
and around the nose tip, an ellipse around the mouth corners, and an ellipse for the whole face centred between the
eyes and the mouth, sized from the eye distance and the eye-to-mouth height. Its rim is the face boundary (where a
swapped face is blended in); inside it and in none of the parts is the rest of the face ("cheeks and forehead");
outside is background. Region sizes are fractions of those two distances (named below), so the map is scale-free.

Each region gets its share of the heatmap's mass and its mean heat; the named regions are those holding the most
heat per pixel, which is what "the network looked here" means for a coarse map. The landmarks are found again on
the crop that was explained (MTCNN on the crop); when none is found, a frontal template placed on the crop is used
and `landmarks` says "template".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EYE_RADIUS = 0.35  # x the eye distance
NOSE_RADIUS = 0.30  # x the eye distance
MOUTH_PAD = 0.30  # the mouth ellipse reaches this x the eye distance beyond the corners, and as far up and down
FACE_HALF_WIDTH = 1.05  # x the eye distance: the face ellipse's half width
FACE_TOP = 1.15  # x the eye-to-mouth height above the eyes' centre ... (the forehead)
FACE_BOTTOM = 0.85  # ... and below the mouth's centre (the chin)
BOUNDARY_BAND = (0.80, 1.12)  # the rim of the face ellipse, in normalised radius: the blending boundary
HOT = 0.5  # a region is "hot" when its mean heat is at least this fraction of the hottest region's
# A frontal face in a square crop with this project's margins: eyes, nose, mouth corners as fractions of the side.
TEMPLATE = np.array([[0.36, 0.42], [0.64, 0.42], [0.50, 0.55], [0.39, 0.67], [0.61, 0.67]], np.float32)
REGIONS = ("eyes", "nose", "mouth", "face boundary", "cheeks and forehead", "background")


@dataclass(frozen=True, slots=True)
class RegionShare:
    region: str
    share: float  # of the map's total heat
    mean: float  # mean heat over the region's pixels
    pixels: int


def region_masks(landmarks: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Boolean (size, size) masks per region, disjoint, covering the crop. Parts take precedence over the rim."""
    lm = np.asarray(landmarks, np.float32).reshape(5, 2)
    le, re_, nose, ml, mr = lm
    eye_d = max(float(np.hypot(*(re_ - le))), 1.0)
    eyes_c, mouth_c = (le + re_) / 2, (ml + mr) / 2
    height = max(float(np.hypot(*(mouth_c - eyes_c))), 1.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5

    def disc(c, r):
        return (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= r ** 2

    eyes = disc(le, EYE_RADIUS * eye_d) | disc(re_, EYE_RADIUS * eye_d)
    nose_m = disc(nose, NOSE_RADIUS * eye_d)
    mouth_half_w = float(np.hypot(*(mr - ml))) / 2 + MOUTH_PAD * eye_d
    mouth = ((xx - mouth_c[0]) / mouth_half_w) ** 2 + ((yy - mouth_c[1]) / (MOUTH_PAD * eye_d)) ** 2 <= 1
    top, bottom = eyes_c[1] - FACE_TOP * height, mouth_c[1] + FACE_BOTTOM * height
    centre_y, half_h = (top + bottom) / 2, (bottom - top) / 2
    centre_x = float((eyes_c[0] + mouth_c[0]) / 2)
    radius = np.sqrt(((xx - centre_x) / (FACE_HALF_WIDTH * eye_d)) ** 2 + ((yy - centre_y) / half_h) ** 2)
    rim = (radius >= BOUNDARY_BAND[0]) & (radius <= BOUNDARY_BAND[1])
    masks: dict[str, np.ndarray] = {}
    taken = np.zeros((size, size), bool)
    for name, m in (("eyes", eyes), ("mouth", mouth), ("nose", nose_m), ("face boundary", rim),
                    ("cheeks and forehead", radius < BOUNDARY_BAND[0]), ("background", np.ones_like(rim))):
        masks[name] = m & ~taken
        taken |= m
    return masks


def shares(heatmap: np.ndarray, landmarks: np.ndarray) -> list[RegionShare]:
    """Every region's share of the heat and mean heat, hottest (by mean) first; empty regions are left out."""
    heat = np.asarray(heatmap, np.float32)
    total = float(heat.sum()) or 1.0
    out = []
    for name, mask in region_masks(landmarks, heat.shape[0]).items():
        n = int(mask.sum())
        if n:
            out.append(RegionShare(name, float(heat[mask].sum()) / total, float(heat[mask].mean()), n))
    return sorted(out, key=lambda r: -r.mean)


def hot_regions(heatmap: np.ndarray, landmarks: np.ndarray) -> list[str]:
    """The regions holding the most heat per pixel: the hottest and any within `HOT` of it. Empty when the map
    is empty (a saturated score)."""
    ranked = shares(heatmap, landmarks)
    if not ranked or ranked[0].mean <= 0:
        return []
    return [r.region for r in ranked if r.mean >= HOT * ranked[0].mean]


def peak_region(heatmap: np.ndarray, landmarks: np.ndarray) -> str:
    """The region holding the map's maximum."""
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    for name, mask in region_masks(landmarks, heatmap.shape[0]).items():
        if mask[y, x]:
            return name
    return "background"


def template_landmarks(size: int) -> np.ndarray:
    return TEMPLATE * size


def crop_landmarks(detector, crops: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """Per crop: MTCNN's landmarks of the face nearest its centre and "mtcnn", or the template and "template"
    when no face is found (or no detector is given)."""
    size = crops.shape[1]
    if detector is None:
        return [(template_landmarks(size), "template") for _ in crops]
    out = []
    for crop, faces in zip(crops, detector.detect(list(crops))):
        if not faces:
            out.append((template_landmarks(size), "template"))
            continue
        centre = size / 2
        best = min(faces, key=lambda d: np.hypot((d.box[0] + d.box[2]) / 2 - centre, (d.box[1] + d.box[3]) / 2 - centre))
        out.append((np.asarray(best.landmarks, np.float32).reshape(5, 2), "mtcnn"))
    return out
