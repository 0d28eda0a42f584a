"""MTCNN's nets on ONNX Runtime against facenet-pytorch's torch nets, on shared frames: the same faces, boxes within
1 px, landmarks within 1 px. Frames are FF++ video frames decoded with PyAV and the shared face photos."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from stream.config.faces import DetectorConfig
from stream.live.faces import FaceDetector
from stream.live.faces.mtcnn_onnx import OrtNet

from support.shared import FFPP_VIDEOS, SHARED

FRAMES_PER_VIDEO = 2
FRAME_STEP = 40  # decoded frames between the two taken from each video
PHOTOS = 6  # of each shared face folder
BOX_PX = 1.0
LANDMARK_PX = 1.0
PROB_TOL = 1e-3


def _video_frames() -> list[np.ndarray]:
    frames = []
    for video in FFPP_VIDEOS:
        with av.open(str(video)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % FRAME_STEP == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if i >= FRAME_STEP * (FRAMES_PER_VIDEO - 1):
                    break
    return frames


def _photos() -> list[np.ndarray]:
    out = []
    for folder in sorted((SHARED / "data" / "faces").iterdir()):
        for path in sorted(folder.glob("*.jpg"))[:PHOTOS] + sorted(folder.glob("*.png"))[:PHOTOS]:
            out.append(np.asarray(Image.open(path).convert("RGB")))
    return out


@pytest.fixture(scope="module")
def detectors() -> tuple[FaceDetector, FaceDetector]:
    torch_det, ort_det = FaceDetector(DetectorConfig(backend="torch")), FaceDetector(DetectorConfig(backend="onnx"))
    assert set(ort_det.nets) == {"pnet", "rnet", "onet"} and all(isinstance(n, OrtNet) for n in ort_det.nets.values())
    assert not isinstance(torch_det.nets["pnet"], OrtNet)
    return torch_det, ort_det


def _assert_same(ref, got, where: str) -> int:
    assert len(got) == len(ref), f"{where}: torch found {len(ref)} faces, ORT {len(got)}"
    for r in ref:  # each torch face has an ORT face at the same place (order may differ on ties)
        g = min(got, key=lambda d: float(np.abs(d.box - r.box).max()))
        assert np.abs(g.box - r.box).max() <= BOX_PX, (where, r.box, g.box)
        assert np.abs(g.landmarks - r.landmarks).max() <= LANDMARK_PX, (where, r.landmarks, g.landmarks)
        assert abs(g.prob - r.prob) <= PROB_TOL, (where, r.prob, g.prob)
    return len(ref)


@pytest.mark.slow  # 27 s (pytest --fast --durations=30, 2026-12-07)
def test_ort_finds_the_same_faces_as_torch_on_video_frames(detectors, ffpp):
    torch_det, ort_det = detectors
    frames = _video_frames()
    assert len(frames) >= FRAMES_PER_VIDEO * len(FFPP_VIDEOS) // 2
    found = 0
    for shape in dict.fromkeys(f.shape for f in frames):  # one batch per frame size, as the scheduler sends them
        batch = [f for f in frames if f.shape == shape]
        for k, (r, g) in enumerate(zip(torch_det.detect(batch), ort_det.detect(batch))):
            found += _assert_same(r, g, f"frame {k} of size {shape}")
    assert found >= len(frames) * 0.8  # the clips show a face nearly always: the comparison is not vacuous


@pytest.mark.slow  # 11 s (pytest --fast --durations=30, 2026-12-07)
def test_ort_finds_the_same_faces_as_torch_on_photos_and_relocation(detectors):
    torch_det, ort_det = detectors
    photos = _photos()
    assert photos
    found = 0
    for k, photo in enumerate(photos):
        ref, got = torch_det.detect([photo])[0], ort_det.detect([photo])[0]
        found += _assert_same(ref, got, f"photo {k}")
        if ref:  # the re-location path (crops around the last box, resized to 96²) too
            r = torch_det.relocate([(photo, ref[0].box)])[0]
            g = ort_det.relocate([(photo, ref[0].box)])[0]
            assert (r is None) == (g is None)
            if r is not None:
                _assert_same([r], [g], f"photo {k} re-located")
    assert found >= len(photos) // 2


def test_onnx_backend_is_refused_off_the_cpu():
    with pytest.raises(ValueError, match="CPU only"):
        DetectorConfig(backend="onnx", device="cuda")
    with pytest.raises(ValueError):
        DetectorConfig(backend="tensorrt")
    assert DetectorConfig().runs_on == "onnx"  # the default on the CPU: ORT (issue 25)
    assert DetectorConfig(device="cuda").runs_on == "torch"  # auto never puts ORT on a GPU device
