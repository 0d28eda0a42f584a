"""Face detection with facenet-pytorch's MTCNN, whose weights ship inside its wheel (no download); its nets run in
torch or, with `backend: onnx`, in ONNX Runtime (`mtcnn_onnx.py`).

Frames are detected in batches (MTCNN batches same-sized images), after an optional downscale so large
frames cost no more than `max_side` pixels (a decoded frame is scaled in its own format and converted to RGB at
the small size: `Picture.scaled`); boxes and landmarks are mapped back to full-frame pixels. A source's
`DetectionProfile` (stream/config/faces.py) may set its own `max_side` and smallest face (a shared screen's call
tiles are small faces in a large picture).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stream.config.faces import CAMERA, DetectionProfile, DetectorConfig

from stream.live.faces import tv_compat
from stream.live.faces.crop import crop_faces, square_box
from stream.live.sources.picture import Picture, as_picture

# Faces are searched for down to this fraction of the engines' quality floor: a face far below it cannot be
# scored, so its pyramid levels are not worth their cost, while one a little under it is still found and shown
# as low-quality (with its reason) rather than silently missing.
FLOOR_SEARCH_FRACTION = 0.5


@dataclass(frozen=True, slots=True)
class Detection:
    """A face in full-frame pixels: box (x1, y1, x2, y2), MTCNN probability and 5 landmarks (x, y)
    in the order left eye, right eye, nose, left mouth corner, right mouth corner."""

    box: np.ndarray
    prob: float
    landmarks: np.ndarray


class FaceDetector:
    def __init__(self, config: DetectorConfig | None = None, min_source_face_px: float = 0.0) -> None:
        """`min_source_face_px`: the smallest face (short side, source pixels) any engine can judge; the search
        stops at `FLOOR_SEARCH_FRACTION` of it, never below `config.min_face_size` in detector pixels."""
        self.config = config or DetectorConfig()
        self.min_source_face_px = min_source_face_px
        with tv_compat.standin():
            from facenet_pytorch import MTCNN  # binds the torchvision functions it needs at import

        self._mtcnn = MTCNN(
            keep_all=True,
            min_face_size=self.config.min_face_size,
            thresholds=list(self.config.thresholds),
            post_process=False,
            select_largest=False,
            device=torch.device(self.config.device),
        )
        if self.config.runs_on == "onnx":
            from stream.live.faces.mtcnn_onnx import use_onnx

            use_onnx(self._mtcnn, self.config.threads)

    @property
    def nets(self) -> dict[str, object]:
        """MTCNN's three stages by name (pnet, rnet, onet): torch modules, or ONNX Runtime nets with `backend: onnx`."""
        return {kind: getattr(self._mtcnn, kind) for kind in ("pnet", "rnet", "onet")}

    def set_threads(self, threads: int) -> None:
        """Size the ONNX Runtime sessions of the nets (`backend: onnx`); torch's pool is the process's own."""
        for net in self.nets.values():
            if hasattr(net, "set_threads"):
                net.set_threads(threads)

    def _scale(self, size: tuple[int, int], profile: DetectionProfile = CAMERA) -> float:
        return min(1.0, (profile.max_side or self.config.max_side) / max(size))

    def detect(self, images: Sequence[Picture | np.ndarray],
               profiles: Sequence[DetectionProfile] | None = None) -> list[list[Detection]]:
        """Detect faces in frames (decoded pictures, or RGB uint8 arrays). Same-sized frames of one profile are
        sent to MTCNN as one batch. `profiles`: per frame, how its source is searched (default: every frame
        `CAMERA`). A decoded picture is scaled to the detector's size in its own format and converted to RGB at
        that size (`Picture.scaled`); boxes and landmarks come back in the frame's own pixels, per axis."""
        pictures = [as_picture(image) for image in images]
        results: list[list[Detection]] = [[] for _ in pictures]
        groups: dict[tuple[tuple[int, int], DetectionProfile], list[int]] = {}
        for i, picture in enumerate(pictures):
            groups.setdefault((picture.size, profiles[i] if profiles else CAMERA), []).append(i)
        for ((w, h), profile), indices in groups.items():
            scale = self._scale((w, h), profile)
            sw, sh = (w, h) if scale >= 1.0 else (max(1, round(w * scale)), max(1, round(h * scale)))
            in_decoded = self.config.downscale == "decoded"
            batch = np.stack([pictures[i].scaled(sw, sh, in_decoded) for i in indices])
            back = np.array([w / sw, h / sh], dtype=np.float32)  # detector pixels -> frame pixels, per axis
            smallest = min(self.min_face_size(scale, profile), min(batch.shape[1:3]))  # >= 1 pyramid level
            boxes, probs, points = self._cascade(batch, smallest)
            for i, b, p, pts in zip(indices, boxes, probs, points):
                if b is None:
                    continue
                results[i] = [
                    Detection(box=(box.reshape(2, 2) * back).reshape(4).astype(np.float32), prob=float(prob),
                              landmarks=(lm * back).astype(np.float32))
                    for box, prob, lm in zip(b, p, pts)
                    if prob >= self.config.min_prob
                ]
        return results

    def _cascade(self, batch: np.ndarray, min_face: int) -> tuple[list, list, list]:
        """facenet-pytorch's cascade on a batch of same-sized RGB images, searching faces down to `min_face` pixels:
        per image its boxes (N, 4), probabilities (N,) and landmarks (N, 5, 2), or None, [None], None with no face
        (as `MTCNN.detect` returns them). The smallest face is this call's argument, not a setting on the shared
        MTCNN object, so detection workers can run the cascade at once (`scheduler.detect_workers`)."""
        from facenet_pytorch.models.utils.detect_face import detect_face  # imported with MTCNN (`__init__`)

        m = self._mtcnn
        with torch.inference_mode():
            found, marks = detect_face(batch, min_face, m.pnet, m.rnet, m.onet, m.thresholds, m.factor, m.device)
        found = [np.asarray(box) for box in found]
        boxes = [box[:, :4] if len(box) else None for box in found]
        probs = [box[:, 4] if len(box) else [None] for box in found]
        points = [np.asarray(point) if len(box) else None for box, point in zip(found, marks)]
        return boxes, probs, points

    def min_face_size(self, scale: float, profile: DetectionProfile = CAMERA) -> int:
        """MTCNN's smallest searched face, in the pixels of an image downscaled by `scale`."""
        return max(profile.min_face_size or self.config.min_face_size,
                   int(self.min_source_face_px * FLOOR_SEARCH_FRACTION * scale))

    def relocate(self, regions: Sequence[tuple[Picture | np.ndarray, np.ndarray]], scale: float = 2.0,
                 size: int = 96) -> list[Detection | None]:
        """Find again each face (image, last box) in a square crop `scale` times the box, resized to `size`:
        one MTCNN batch for all of them. Returns per region the detection nearest the crop's centre, in
        full-frame pixels, or None where the face is gone."""
        if not regions:
            return []
        margin = (scale - 1.0) / 2.0
        crops = np.stack([crop_faces(image, [box], size, margin)[0] for image, box in regions])
        boxes, probs, points = self._cascade(crops, self.config.min_face_size)
        out: list[Detection | None] = []
        for (image, box), b, p, pts in zip(regions, boxes, probs, points):
            left, top, right, _ = square_box(box, margin)
            k = (right - left) / size  # crop pixels -> source pixels
            found = [] if b is None else [(bb, pp, ll) for bb, pp, ll in zip(b, p, pts) if pp >= self.config.min_prob]
            if not found:
                out.append(None)
                continue
            centre = size / 2.0
            bb, pp, ll = min(found, key=lambda f: np.hypot((f[0][0] + f[0][2]) / 2 - centre,
                                                           (f[0][1] + f[0][3]) / 2 - centre))
            shift = np.array([left, top], dtype=np.float32)
            out.append(Detection(box=(bb.reshape(2, 2) * k + shift).reshape(4).astype(np.float32), prob=float(pp),
                                 landmarks=(ll * k + shift).astype(np.float32)))
        return out

