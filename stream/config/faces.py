"""Face detector settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DetectorConfig(BaseModel):
    """MTCNN settings. `min_prob` drops low-confidence faces after the cascade's own thresholds.

    `backend` runs MTCNN's three nets in torch (facenet-pytorch as shipped) or in ONNX Runtime (the same weights
    exported in memory at start-up, inside facenet-pytorch's own pyramid and NMS: `stream/live/faces/mtcnn_onnx.py`).
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
    backend: Literal["torch", "onnx"] = Field(default="torch", description="what runs MTCNN's nets: torch or onnx "
                                                                            "(ONNX Runtime, CPU only)")
    threads: int | None = Field(default=None, gt=0, description="ONNX Runtime intra-op threads for the nets "
                                                                 "(onnx backend; default: ORT's own, all cores)")

    @model_validator(mode="after")
    def _onnx_on_cpu(self) -> "DetectorConfig":
        if self.backend == "onnx" and self.device != "cpu":
            raise ValueError(f"detector backend 'onnx' runs on the CPU only, not on device {self.device!r}; "
                             "use backend 'torch' there")
        return self
