"""The torchvision stand-in must behave like torchvision's NMS and to_tensor, and only stand in when needed."""

import sys

import numpy as np
import pytest
import torch

from stream.live.faces import tv_compat


def reference_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Brute-force greedy NMS, written from the definition: keep the best box, drop all with IoU > thr."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        if all(iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def random_boxes(rng, n):
    xy = rng.uniform(0, 100, size=(n, 2))  # crowded, so every threshold suppresses something
    wh = rng.uniform(5, 80, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32), rng.uniform(size=n).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_matches_reference(seed, thr):
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, 200)
    got = tv_compat.nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist()
    assert got == reference_nms(boxes, scores, thr)
    assert len(got) < len(boxes)  # the case really suppresses something


def test_batched_nms_is_per_category():
    rng = np.random.default_rng(7)
    boxes, scores = random_boxes(rng, 120)
    idxs = rng.integers(0, 3, size=len(boxes))
    got = set(tv_compat.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                    torch.from_numpy(idxs), 0.5).tolist())
    expected = set()
    for c in range(3):
        members = np.flatnonzero(idxs == c)
        expected |= {int(members[k]) for k in reference_nms(boxes[members], scores[members], 0.5)}
    assert got == expected


def test_nms_empty():
    assert tv_compat.nms(torch.zeros((0, 4)), torch.zeros(0), 0.5).numel() == 0


def test_to_tensor_scales_uint8_only():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    t = tv_compat.to_tensor(img)
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert torch.allclose(t[:, 1, 2], torch.from_numpy(img[1, 2].astype(np.float32) / 255))
    f = tv_compat.to_tensor(img.astype(np.float32))
    assert f[2, 1, 1] == img[1, 1, 2]


def test_standin_serves_facenet_imports_then_leaves():
    import importlib.util

    real = tv_compat.real_torchvision_available()
    with tv_compat.standin() as used:
        assert used is not real
        from torchvision.ops.boxes import batched_nms  # noqa: F401  (what facenet-pytorch imports)
        from torchvision.transforms import functional as F

        assert callable(F.to_tensor) and importlib.util.find_spec("torchvision") is not None
    if used:  # gone again, so libraries probing for torchvision see it is absent
        assert "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is None


def test_mtcnn_works_through_the_standin():
    from stream.live.faces import FaceDetector

    img = np.zeros((120, 160, 3), np.uint8)
    assert FaceDetector().detect([img]) == [[]]
    assert tv_compat.real_torchvision_available() or "torchvision" not in sys.modules
