"""Face detector settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DetectorConfig(BaseModel):
    """MTCNN settings. `min_prob` drops low-confidence faces after the cascade's own thresholds.

    `backend` runs MTCNN's three nets in torch (facenet-pytorch as shipped) or in ONNX Runtime (the same weights
    exported in memory at start-up, inside facenet-pytorch's own pyramid and NMS: `stream/live/faces/mtcnn_onnx.py`).
    `auto` (the default) is ORT on the CPU and torch elsewhere.
    Trade-off: ORT is faster per detection on CPU (benchmarks/faces.py) and its thread pool can be sized apart from
    torch's (`threads`), at the cost of a ~1 s export when the detector is built and float-rounding differences
    (well under a pixel) in the boxes; it is CPU-only. torch is the reference and the one to use on CUDA."""

    model_config = ConfigDict(extra="forbid")

    min_face_size: int = Field(default=40, gt=0, description="smallest face MTCNN looks for, in detector pixels")
    thresholds: tuple[float, float, float] = Field(default=(0.6, 0.7, 0.7), description="MTCNN's P-, R- and "
                                                   "O-net score thresholds")
    min_prob: float = Field(default=0.9, ge=0.0, le=1.0, description="faces below this final probability are "
                            "dropped")
    max_side: int = Field(default=640, gt=0, description="frames are downscaled to this longest side to detect")
    device: str = Field(default="cpu", description="torch device of the detector (cpu, cuda, cuda:1, ...)")
    backend: Literal["auto", "torch", "onnx"] = Field(
        default="auto", description="what runs MTCNN's nets: onnx (ONNX Runtime, CPU only), torch, or auto (onnx on "
        "the CPU, where --compare measured it faster with the same faces, torch on a GPU)")
    threads: int | None = Field(default=None, gt=0, description="ONNX Runtime intra-op threads for the nets "
                                                                 "(onnx backend; default: ORT's own, all cores)")
    downscale: Literal["decoded", "rgb"] = Field(
        default="decoded", description="how a decoded frame becomes the detector's picture. decoded: scaled in its "
        "own format (YUV, area averaging) and converted to RGB at the small size (about 2 ms less per full "
        "detection of a 720p frame, 4 ms at 1080p); rgb: converted at full size, then downscaled by PIL, the path "
        "before issue 25 (the same boxes as it, pixel for pixel; the two differ by MTCNN's rounding, a few pixels)")

    @property
    def runs_on(self) -> Literal["torch", "onnx"]:
        """The backend `auto` resolves to on this config's device."""
        if self.backend == "auto":
            return "onnx" if self.device == "cpu" else "torch"
        return self.backend

    @model_validator(mode="after")
    def _onnx_on_cpu(self) -> "DetectorConfig":
        if self.backend == "onnx" and self.device != "cpu":
            raise ValueError(f"detector backend 'onnx' runs on the CPU only, not on device {self.device!r}; "
                             "use backend 'torch' there")
        return self


@dataclass(frozen=True)
class DetectionProfile:
    """How one kind of source is searched for faces, where it differs from the detector's and the scheduler's own
    settings (None: theirs). A source carries one (`SourceConfig.detection`, `WebRTCSource`); each is a named
    policy below."""

    name: str
    max_side: int | None = None  # frames are downscaled to this longest side to detect
    min_face_size: int | None = None  # smallest face MTCNN looks for, in detector pixels
    detect_every: int | None = None  # analysed frames per full-frame detection (re-location in between)


# CAMERA: a webcam or camera, where a face usually fills a good part of the picture: the detector's and the
# scheduler's own settings (`detector.max_side`, `scheduler.detection`), unchanged.
CAMERA = DetectionProfile("camera")

# SCREEN: a shared screen, window or tab, usually a call's grid of participants: several faces of 40-100 px
# (call tiles of 80-200 px) in a 1280x720 or larger picture. Detection runs on up to 1280 px (a 1080p screen
# is downscaled by 2/3, a 720p tab not at all), so a 40 px face is still 40 detector pixels, where the camera
# profile's 640 px would halve it below MTCNN's smallest searched face. Trade-off: one such detection costs
# about 4x the camera profile's (MTCNN's pyramid grows with the pixels: benchmarks/screen_faces.py counts it), so
# it runs every 12th analysed frame instead of every 3rd, and the tracked faces are re-located on small crops
# in between: the full-frame work per analysed frame stays the camera profile's. A participant who joins, or a
# layout change that keeps every tracked face in its crop, waits up to 11 analysed frames (2.2 s at 5 fps) for a
# box; a face lost from its crop triggers a full detection at once. A 4K screen is downscaled by 3, so its faces
# under ~120 px are missed: share the call's window or tab, not a whole 4K screen.
SCREEN = DetectionProfile("screen", max_side=1280, min_face_size=40, detect_every=12)

PROFILES: dict[str, DetectionProfile] = {p.name: p for p in (CAMERA, SCREEN)}
