"""Shared fixtures: paths into ../shared (read-only test media and real weights) and real face crops."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from support.parts import needs, require
from support.shared import CROP_FPS, CROPS_PER_VIDEO, FFPP, FFPP_VIDEOS

pytest_plugins = ("support.fast_tier",)  # --fast, the markers that leave it out, and its guards


def pytest_collection_modifyitems(config, items):
    if not FFPP_VIDEOS:
        for item in items:
            if "ffpp" in item.fixturenames:
                item.add_marker(needs("the shared FF++ media", f"not found at {FFPP}"))


def pytest_runtest_setup(item):
    """`needs(part, reason)` marks: skip when the part is missing, or fail in strict mode (see tests/support/parts.py)."""
    for mark in item.iter_markers("needs"):
        require(mark.kwargs["part"], mark.kwargs["reason"])


@pytest.fixture(scope="session", autouse=True)
def _engine_cache(tmp_path_factory):
    """Converted engines (ONNX, int8, TensorRT) go to a per-run folder, never the user's cache."""
    import os

    os.environ["DFSTREAM_CACHE"] = str(tmp_path_factory.mktemp("engine-cache"))


@pytest.fixture(scope="session")
def ffpp() -> Path:
    assert FFPP_VIDEOS, f"expected FF++ samples in {FFPP}"
    return FFPP


@functools.lru_cache(maxsize=1)
def _detections() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(frame, face box) pairs: the first CROPS_PER_VIDEO sampled frames of each shared video, MTCNN's best face."""
    from stream.live.faces import FaceDetector
    from stream.live.sources import AVSource

    detector = FaceDetector()
    pairs = []
    for video in FFPP_VIDEOS:
        frames = []
        for frame in AVSource(video, sample_fps=CROP_FPS).frames():
            frames.append(frame.image)
            if len(frames) == CROPS_PER_VIDEO:
                break
        for image, faces in zip(frames, detector.detect(frames)):
            if faces:
                best = max(faces, key=lambda d: d.prob)
                pairs.append((image, best.box))
    return tuple(pairs)


@pytest.fixture(scope="session")
def ffpp_face_crops():
    """Call with (size, margin=0.2) to get uint8 (N, size, size, 3) real MTCNN face crops from the FF++ videos."""
    from stream.live.faces import crop_faces

    def make(size: int, margin: float = 0.2) -> np.ndarray:
        return np.concatenate([crop_faces(img, [box], size, margin) for img, box in _detections()])

    return make
