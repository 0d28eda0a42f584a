"""Stand-ins for the two torchvision pieces facenet-pytorch imports, used only when torchvision cannot import.

PyPI's torchvision is built against CUDA torch and fails to import beside the CPU torch these machines pin
("operator torchvision::nms does not exist"). facenet-pytorch needs just `ops.boxes.batched_nms` and
`transforms.functional.to_tensor`; `standin()` registers pure-torch versions under those module names when,
and only when, the real package is unusable, for as long as facenet-pytorch takes to import them. Afterwards
they leave `sys.modules` again, so no other library (transformers probes for torchvision) mistakes them for the
real package. On GPU machines the real torchvision is imported and used.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression with torchvision's semantics: (x1, y1, x2, y2) boxes, continuous areas,
    drop any box whose IoU with a kept, higher-scoring box is > iou_threshold; return kept indices by score.

    In NumPy, not torch: MTCNN calls this on tens of boxes many times per frame, where torch's per-op
    overhead was most of the cost (about a tenth of a live pass)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    b = boxes.detach().cpu().numpy()
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-scores.detach().cpu().numpy(), kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):  # two empty boxes: 0/0 is NaN, never > threshold
            iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > iou_threshold)]
    return torch.as_tensor(np.asarray(keep, dtype=np.int64), device=boxes.device)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS applied independently per category `idxs`, by offsetting each category's boxes apart (as torchvision)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def to_tensor(pic) -> torch.Tensor:
    """HWC image (ndarray or PIL) -> CHW float tensor; uint8 input is scaled to [0, 1], as torchvision does."""
    arr = np.asarray(pic)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    if tensor.dtype == torch.uint8:
        return tensor.float().div(255)
    return tensor


def real_torchvision_available() -> bool:
    try:
        import torchvision.ops  # noqa: F401
    except Exception:  # ImportError, or RuntimeError from a torchvision built for another torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return not getattr(sys.modules["torchvision"], "__dfstream_standin__", False)


STANDIN_MODULES = ("torchvision", "torchvision.ops", "torchvision.ops.boxes", "torchvision.transforms",
                   "torchvision.transforms.functional")


def _standin_modules() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in STANDIN_MODULES}
    for name, mod in modules.items():
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=name.count(".") < 2)
    modules["torchvision"].__dfstream_standin__ = True  # type: ignore[attr-defined]
    for mod in (modules["torchvision.ops"], modules["torchvision.ops.boxes"]):
        mod.nms = nms  # type: ignore[attr-defined]
        mod.batched_nms = batched_nms  # type: ignore[attr-defined]
    modules["torchvision.transforms.functional"].to_tensor = to_tensor  # type: ignore[attr-defined]
    modules["torchvision"].ops = modules["torchvision.ops"]  # type: ignore[attr-defined]
    modules["torchvision"].transforms = modules["torchvision.transforms"]  # type: ignore[attr-defined]
    modules["torchvision.ops"].boxes = modules["torchvision.ops.boxes"]  # type: ignore[attr-defined]
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]  # type: ignore[attr-defined]
    return modules


@contextmanager
def standin() -> Iterator[bool]:
    """Within the block, `torchvision.ops.boxes.batched_nms` and `torchvision.transforms.functional.to_tensor`
    import: the real ones if torchvision works here, else the stand-ins. Yields True if the stand-in is used."""
    if real_torchvision_available():
        yield False
        return
    modules = _standin_modules()
    sys.modules.update(modules)
    try:
        yield True
    finally:
        for name in modules:
            if sys.modules.get(name) is modules[name]:
                del sys.modules[name]
