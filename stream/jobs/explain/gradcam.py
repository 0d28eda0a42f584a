"""`dfstream explain`: where in a face the evidence for "fake" lies, as Grad-CAM heatmaps (Selvaraju et al., 2017).

A reviewer who sees "fake, 0.97" wants to know whether the network looked at the blending seam around the face,
the mouth, or the background. For a frame engine's top-scoring face-frames, Grad-CAM weighs the channels of the
last spatial convolution by the gradient of p(fake) and keeps the positive evidence, upsampled to the crop.

Honest limits: it needs the torch network (not ONNX Runtime or TensorRT), so `explain` always runs the torch
backend; it explains frame engines only (clip engines mix frames in time); and a score saturated at exactly 0 or 1
has no gradient, which is reported (`saturated`) rather than drawn as an empty map.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engines.base import TorchEngine
from stream.live.scoring import Scorer
from stream.jobs.scan import FaceBatch
from stream.live.faces.quality import FaceQuality

HEAT_ALPHA = 0.45  # overlay opacity of the heatmap over the crop
HEAT_COLORMAP = "jet"
HEATMAPS_FILE = "heatmaps.npz"
SUMMARY_FILE = "explanations.json"


class ExplainError(ValueError):
    """The engine or the input cannot be explained; the message says why."""


@dataclass(frozen=True, slots=True)
class Explanation:
    frame: int  # ordinal among the input's sampled frames
    track: int
    p_fake: float
    crop: np.ndarray  # (S, S, 3) uint8, as the engine saw it
    heatmap: np.ndarray  # (S, S) float32 in [0, 1]; all zero when saturated
    saturated: bool
    quality: FaceQuality | None = None  # the face's size and sharpness where the scan measured them


def last_spatial_conv(module: nn.Module, size: int) -> nn.Module:
    """The last convolution to run whose output still has a spatial extent (both sides >= 2): the layer whose
    activations Grad-CAM weighs. Found by running the network once, so any architecture works."""
    order: list[tuple[nn.Module, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda m, _i, out: order.append((m, tuple(out.shape))))
             for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            param = next(module.parameters())
            module(torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device))
    finally:
        for h in hooks:
            h.remove()
    spatial = [m for m, shape in order if len(shape) == 4 and min(shape[2:]) >= 2]
    if not spatial:
        raise ExplainError("the network has no convolution with a spatial output to explain")
    return spatial[-1]


class GradCam:
    """Grad-CAM for a torch frame engine: `(crops) -> (p_fake (N,), heatmaps (N, S, S) in [0, 1])`."""

    def __init__(self, engine: TorchEngine, layer: nn.Module | None = None) -> None:
        if not isinstance(engine, TorchEngine):
            raise ExplainError(f"{engine.name}: explanations need the torch network; run it with --backend torch")
        if engine.spec.frames != 1:
            raise ExplainError(f"{engine.name} scores {engine.spec.frames}-frame clips; explain takes frame engines")
        self.engine = engine
        self.layer = layer or last_spatial_conv(engine.module, engine.spec.size)

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.engine.check_batch(crops)
        captured: list[torch.Tensor] = []
        hook = self.layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            with torch.enable_grad():
                # eager (the frozen graph has no gradients); the input asks for them so a network whose
                # parameters are frozen still yields activation gradients
                x = self.engine.preprocess(crops).requires_grad_(True)
                raw = self.engine.module(x)
                p_fake = self.engine.labels.to_p_fake(raw.float())
                activations = captured[-1]
                (grads,) = torch.autograd.grad(p_fake.sum(), activations)
        finally:
            hook.remove()
        weights = grads.float().mean(dim=(2, 3), keepdim=True)  # one weight per channel: its pooled gradient
        cam = F.relu((weights * activations.detach().float()).sum(dim=1, keepdim=True))
        size = self.engine.spec.size
        cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        peak = cam.flatten(1).max(dim=1).values.clamp(min=torch.finfo(torch.float32).tiny)
        heat = (cam / peak[:, None, None]).clamp(0, 1)
        return p_fake.detach().cpu().numpy().astype(np.float32), heat.cpu().numpy().astype(np.float32)


def explain_top(engine: TorchEngine, batches: Iterable[FaceBatch], top: int) -> list[Explanation]:
    """Score every face-frame, keep the `top` with the highest p(fake) (a heap, so memory stays bounded on long
    videos), and explain those. Most fake first."""
    if top <= 0:
        raise ExplainError(f"--top must be positive, got {top}")
    cam = GradCam(engine)
    scorer = Scorer([engine])
    (key,) = scorer.crop_keys
    rings = scorer.track_rings()
    best: list[tuple] = []  # (p, frame, -track, tiebreak, quality, crop), a min-heap
    seen = 0
    for batch in batches:
        faces = [(face.index, track, face.quality[j] if face.quality else None, face.crops[key][j])
                 for face in batch.faces for j, track in enumerate(face.tracks)]
        scores = scorer.score((rings.of(track), {key: crop}) for _, track, _, crop in faces)
        rings.expire(batch.expired)
        for (frame, track, quality, crop), got in zip(faces, scores):
            item = (got[engine.name], frame, -track, seen, quality, crop)
            seen += 1
            if len(best) < top:
                heapq.heappush(best, item)
            else:
                heapq.heappushpop(best, item)
    if not best:
        raise ExplainError("no face was found to explain")
    chosen = sorted(best, key=lambda item: (-item[0], item[1]))
    p_fake, heat = cam(np.stack([c[-1] for c in chosen]))
    return [Explanation(frame=f, track=-t, p_fake=float(p), crop=crop, heatmap=h, saturated=not h.any(), quality=q)
            for (_, f, t, _, q, crop), p, h in zip(chosen, p_fake, heat)]


def save_overlay(path: Path, item: Explanation, title: str) -> None:
    """One PNG: the crop beside its heatmap overlay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(6, 3.2))
    left.imshow(item.crop)
    left.set_title("face crop")
    right.imshow(item.crop)
    right.imshow(item.heatmap, cmap=HEAT_COLORMAP, alpha=HEAT_ALPHA, vmin=0, vmax=1)
    right.set_title("no gradient: score saturated" if item.saturated else "evidence for fake (Grad-CAM)")
    for ax in (left, right):
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_explanations(out: Path, source: Path, model: str, items: list[Explanation]) -> dict:
    """Per face-frame a PNG (the crop beside its heatmap overlay), the crops and heatmaps as arrays, and a JSON
    summary; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for rank, item in enumerate(items, 1):
        name = f"{rank:02d}_frame{item.frame:05d}_track{item.track}.png"
        save_overlay(out / name, item, f"{model} · frame {item.frame} · track {item.track} · p_fake {item.p_fake:.3f}")
        peak_y, peak_x = np.unravel_index(int(np.argmax(item.heatmap)), item.heatmap.shape)
        entries.append({"rank": rank, "frame": item.frame, "track": item.track, "p_fake": round(item.p_fake, 6),
                        "saturated": item.saturated, "peak": [int(peak_x), int(peak_y)], "image": name})
    np.savez_compressed(out / HEATMAPS_FILE, crops=np.stack([i.crop for i in items]),
                        heatmaps=np.stack([i.heatmap for i in items]))
    summary = {"source": str(source), "model": model, "method": "grad-cam", "explanations": entries,
               "arrays": HEATMAPS_FILE}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary
