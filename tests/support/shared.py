"""Paths into ../shared (test media and real weights, read-only; see ../shared/README.md), one copy for every test."""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared"
FFPP = SHARED / "data" / "ffpp-c23"
MESONET_WEIGHTS = SHARED / "weights" / "mesonet"
FFPP_VIDEOS = sorted(FFPP.glob("*/*.mp4"))
CROP_FPS = 1.0  # sampled frames per second of video for the ffpp_face_crops fixture
CROPS_PER_VIDEO = 3
