"""Self-blended images (SBI), after Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022.

A pseudo-fake is made from one real face alone: a copy of the face (the *source*) is colour- and
geometry-jittered, then pasted back onto the original (the *target*) through a soft, deformed face mask:

    out = mask * source + (1 - mask) * target

What a detector trained on such images learns are the generic traces of face swapping (blending boundaries,
colour and landmark mismatches) rather than one generator's fingerprints, and a user can train with real footage
only. The paper builds the mask from 68 dlib landmarks; MTCNN gives 5 (eyes, nose, mouth corners), so with 5
points the face region is an ellipse set from their geometry (eye and mouth line, eye distance, roll),
reaching up over the brows and down to the chin, merged with the landmarks' own hull. 68 points are used as the
paper does, through their convex hull.

Where the mask is exactly 0 the output is the original image, bit for bit: outside the face nothing changes,
so the only evidence of blending lies where a real swap would leave it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull

FAKE = 1  # the project's label convention: 1 = fake
LANDMARK_COUNTS = (5, 68)
# The paper's blend strengths (mask scaled by one of these); full-strength blends are drawn most often.
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
# Face ellipse from 5 points, in units of the eye-to-mouth distance (height) and of the eye distance (width).
FOREHEAD_ABOVE_EYES = 0.8
CHIN_BELOW_MOUTH = 0.8
HALF_WIDTH_PER_EYE_DISTANCE = 0.95
HULL_JITTER = 0.1  # each ellipse extent is scaled by U(1 - j, 1 + j): masks vary in size like the paper's hulls
ELLIPSE_POINTS = 64
# Mask deformation, as fractions of the face size (the ellipse's longer axis).
ELASTIC_GRID = 5  # control points per side of the smooth random displacement field
ELASTIC_AMPLITUDE = (0.01, 0.04)
EDGE_BLUR = (0.01, 0.03)  # blur before the random erode/dilate threshold: a wobbly, rounded outline
EDGE_THRESHOLD = (0.3, 0.7)  # < 0.5 dilates, > 0.5 erodes
SOFT_EDGE_BLUR = (0.01, 0.04)  # the final blur that makes the blending boundary soft
MASK_FLOOR = 1e-3  # weights below this are set to exactly 0, so the untouched region is exact
# The mask is built on a grid this many pixels on its longer side, then upscaled: it is smooth at that scale
# anyway, and this keeps a 1024² image's blurs and warp cheap.
MASK_WORK_SIDE = 256
# Source jitter, after the paper's source transforms (RGBShift 20, hue/saturation, brightness/contrast 0.1).
RGB_SHIFT = 20.0
HUE_DEGREES = 10.0
SATURATION = (0.8, 1.2)
BRIGHTNESS = 0.1 * 255.0
CONTRAST = (0.9, 1.1)
SCALE = (0.95, 1 / 0.95)
TRANSLATE = (0.03, 0.015)  # fraction of width, height (the paper's translate_percent)
# RGB <-> YIQ: a hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


@dataclass(frozen=True, slots=True)
class SelfBlended:
    image: np.ndarray  # (H, W, 3) uint8: the pseudo-fake
    mask: np.ndarray  # (H, W) float32 in [0, 1]: the weight of the source in each pixel
    label: int  # always FAKE
    blend: float  # the mask's peak, one of BLEND_RATIOS


def self_blend(image: np.ndarray, landmarks: np.ndarray,
               rng: np.random.Generator | int | None = None) -> SelfBlended:
    """A self-blended pseudo-fake of the face at `landmarks` ((5, 2) MTCNN or (68, 2) points, (x, y) pixels)
    in the RGB uint8 `image`. The same seed gives the same image."""
    rng = np.random.default_rng(rng)
    image = np.asarray(image)
    points = np.asarray(landmarks, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    if points.shape not in {(n, 2) for n in LANDMARK_COUNTS}:
        raise ValueError(f"expected (5, 2) or (68, 2) landmarks, got {points.shape}")
    hull = face_hull(points, rng)
    h, w = image.shape[:2]
    work = min(1.0, MASK_WORK_SIDE / max(h, w))
    small = (max(1, round(h * work)), max(1, round(w * work)))
    face_size = float(np.max(np.ptp(hull, axis=0))) * work
    shape = deform_mask(_fill(hull * work, small), face_size, rng)
    mask = np.array(Image.fromarray(shape, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float32)
    mask[mask < MASK_FLOOR] = 0.0
    blend = float(rng.choice(BLEND_RATIOS))
    mask = mask.clip(0.0, 1.0) * np.float32(blend)
    source = geometric_jitter(colour_jitter(image, rng), hull.mean(axis=0), rng)
    target = image.astype(np.float32)
    weight = mask[..., None]
    out = np.rint(weight * source + (1.0 - weight) * target).clip(0, 255).astype(np.uint8)
    return SelfBlended(image=out, mask=mask, label=FAKE, blend=blend)


def face_hull(landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The face region's outline, (K, 2) points (x, y): the landmarks' convex hull, for 5 points merged with an
    ellipse from forehead to chin built on the eye line."""
    points = landmarks
    if len(landmarks) == 5:
        left_eye, right_eye, _, mouth_left, mouth_right = landmarks
        eyes, mouth = (left_eye + right_eye) / 2, (mouth_left + mouth_right) / 2
        eye_distance = np.linalg.norm(right_eye - left_eye)
        height = max(float(np.linalg.norm(mouth - eyes)), 1.0)
        across = (right_eye - left_eye) / max(eye_distance, 1e-6)
        down = np.array([-across[1], across[0]])  # across turned 90 degrees, pointing to the chin
        j = rng.uniform(1 - HULL_JITTER, 1 + HULL_JITTER, size=3)
        top = eyes - FOREHEAD_ABOVE_EYES * j[0] * height * down
        bottom = mouth + CHIN_BELOW_MOUTH * j[1] * height * down
        centre, half_height = (top + bottom) / 2, np.linalg.norm(bottom - top) / 2
        half_width = HALF_WIDTH_PER_EYE_DISTANCE * j[2] * max(eye_distance, height / 2)
        theta = np.linspace(0, 2 * np.pi, ELLIPSE_POINTS, endpoint=False)[:, None]
        ellipse = centre + half_width * np.cos(theta) * across + half_height * np.sin(theta) * down
        points = np.concatenate([ellipse, landmarks])
    return points[ConvexHull(points).vertices]


def _fill(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in polygon.tolist()], fill=1)
    return np.asarray(canvas, dtype=np.float32)


def deform_mask(mask: np.ndarray, face_size: float, rng: np.random.Generator) -> np.ndarray:
    """Elastic warp (a smooth random displacement field), a random erode/dilate of the blurred outline, then a
    soft edge: the blend boundary's shape and width vary from sample to sample, as in the paper."""
    h, w = mask.shape
    amplitude = rng.uniform(*ELASTIC_AMPLITUDE) * face_size
    grid = rng.uniform(-1.0, 1.0, size=(2, ELASTIC_GRID, ELASTIC_GRID))
    dy, dx = (np.asarray(Image.fromarray(g.astype(np.float32), mode="F").resize((w, h), Image.BICUBIC)) * amplitude
              for g in grid)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warped = ndimage.map_coordinates(mask, [yy + dy, xx + dx], order=1, mode="constant", cval=0.0)
    outline = ndimage.gaussian_filter(warped, rng.uniform(*EDGE_BLUR) * face_size)
    shaped = (outline > rng.uniform(*EDGE_THRESHOLD) * outline.max()).astype(np.float32)
    soft = ndimage.gaussian_filter(shaped, rng.uniform(*SOFT_EDGE_BLUR) * face_size)
    soft /= max(float(soft.max()), 1e-6)
    soft[soft < MASK_FLOOR] = 0.0
    return soft.astype(np.float32)


def colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel shift, hue rotation, saturation, contrast and brightness; float32 (H, W, 3) in [0, 255].
    All five are affine in RGB, so they are composed into one 3x3 map and offset and applied in one pass."""
    shift = rng.uniform(-RGB_SHIFT, RGB_SHIFT, size=3)
    angle = np.deg2rad(rng.uniform(-HUE_DEGREES, HUE_DEGREES))
    chroma = np.eye(3)
    chroma[1:, 1:] = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    chroma[1:, 1:] *= rng.uniform(*SATURATION)
    linear = _YIQ_TO_RGB @ chroma @ _RGB_TO_YIQ
    contrast, brightness = rng.uniform(*CONTRAST), rng.uniform(-BRIGHTNESS, BRIGHTNESS)
    # (x + shift) @ linear.T, then contrast about its mean and brightness: one affine map x @ a.T + offset.
    mean = float(((image.mean(axis=(0, 1)) + shift) @ linear.T).mean())
    a = (contrast * linear).astype(np.float32)
    offset = (contrast * (shift @ linear.T) + (1.0 - contrast) * mean + brightness).astype(np.float32)
    x = image.astype(np.float32)
    # Written out per channel: numpy's matmul with an inner size of 3 is many times slower than this.
    out = np.stack([x[..., 0] * a[i, 0] + x[..., 1] * a[i, 1] + x[..., 2] * a[i, 2] + offset[i] for i in range(3)],
                   axis=-1, dtype=np.float32)
    return out.clip(0.0, 255.0)


def geometric_jitter(image: np.ndarray, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small scale about the face centre and a shift, as the paper's source affine; float32 (H, W, 3)."""
    h, w = image.shape[:2]
    scale = rng.uniform(*SCALE)
    tx, ty = rng.uniform(-1, 1, size=2) * np.array(TRANSLATE) * (w, h)
    cx, cy = centre
    # PIL maps each output pixel p to the input pixel (p - centre - shift) / scale + centre.
    inverse = (1 / scale, 0.0, cx - (cx + tx) / scale, 0.0, 1 / scale, cy - (cy + ty) / scale)
    channels = [Image.fromarray(image[..., c]).transform((w, h), Image.AFFINE, inverse, Image.BILINEAR)
                for c in range(3)]
    return np.stack([np.asarray(ch, dtype=np.float32) for ch in channels], axis=-1)
