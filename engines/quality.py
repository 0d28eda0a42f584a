"""The face quality an engine needs before its score means anything: a floor per model, as registry data.

Why: detectors trained on large, clean faces (MesoNet on FaceForensics++ at 256², Xception at 299²) score small
or soft faces as fake, because upsampling and compression look like manipulation to them. A score from below the
floor is not evidence, so the live verdict calls such a face `low-quality` instead of real or fake.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class QualityFloor(BaseModel):
    """Below `min_face_px` (the face box's short side in source pixels) or `min_sharpness` (variance of the
    Laplacian of the 128² grayscale face crop), the engine's score is not used. `source` says where the numbers
    come from (a benchmark run), so a floor is never a guess without a name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_face_px: int = Field(default=0, ge=0)
    min_sharpness: float = Field(default=0.0, ge=0.0)
    source: str = "not measured: no floor"

    def reason(self, engine: str, face_px: float, sharpness: float) -> str | None:
        """Why a face is below this floor, in words; None when it is not."""
        if face_px < self.min_face_px:
            return f"face {face_px:.0f} px < {self.min_face_px} px for {engine}"
        if sharpness < self.min_sharpness:
            return f"sharpness {sharpness:.0f} < {self.min_sharpness:.0f} for {engine}"
        return None


NO_FLOOR = QualityFloor()


def smallest_floor_px(engines) -> int:
    """The smallest face any of `engines` can judge: faces well below it are not worth searching for."""
    return min((floor_of(e).min_face_px for e in engines), default=0)


def floor_of(engine: object) -> QualityFloor:
    """An engine's floor (`Engine.quality`, set by `build_engine` from its registry entry); none for engines built
    by hand and for stand-ins that are not `Engine`s."""
    return getattr(engine, "quality", None) or NO_FLOOR
