"""MTCNN's P-, R- and O-nets on ONNX Runtime, inside facenet-pytorch's own cascade.

facenet-pytorch's `detect_face` (the image pyramid, NMS, box regression, landmarks) calls its three nets as plain
modules. `use_onnx(mtcnn)` exports each net once, in memory, to ONNX (PNet with dynamic batch, height and width:
it runs on every pyramid level; RNet and ONet with a dynamic batch of 24² / 48² crops) and puts in its place a
module whose `forward` runs the ONNX Runtime session. Everything around the nets stays facenet-pytorch's code, so
the boxes can only differ by the nets' float rounding (checked in tests/test_mtcnn_onnx.py against the torch nets).

Why: the nets are tiny convolutions on many small inputs, where torch's per-operator dispatch is much of the cost;
ORT runs each net as one fused graph call. The pyramid resizes (`interpolate(mode="area")`) and NMS stay in torch /
NumPy, so the gain is bounded by the nets' share of a detection (see benchmarks/faces.py for the figures).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

OPSET = 17
# Traced at these sizes (batch 2, not 1, so nothing specialises on a batch of one); the axes stay dynamic.
EXPORT_SHAPES = {"pnet": (2, 3, 31, 37), "rnet": (2, 3, 24, 24), "onet": (2, 3, 48, 48)}
OUTPUTS = {"pnet": ("reg", "prob"), "rnet": ("reg", "prob"), "onet": ("reg", "landmarks", "prob")}


def export(net: nn.Module, kind: str) -> bytes:
    """One MTCNN net as an ONNX model (bytes), on CPU in fp32, with its batch (and for PNet spatial) axes dynamic."""
    net = net.to("cpu", torch.float32).eval()
    dynamic = {0: "batch", 2: "height", 3: "width"} if kind == "pnet" else {0: "batch"}
    outputs = OUTPUTS[kind]
    axes = {"input": dynamic, **{name: ({0: "batch", 2: "height", 3: "width"} if kind == "pnet" else {0: "batch"})
                                  for name in outputs}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(EXPORT_SHAPES[kind]),), buffer, input_names=["input"],
                          output_names=list(outputs), dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


class OrtNet(nn.Module):
    """Stands in for one MTCNN net: same call (float NCHW tensor in, tuple of tensors out), run by ORT.

    It keeps one zero-sized fp32 parameter because `detect_face` reads the model dtype from
    `next(pnet.parameters())`."""

    def __init__(self, model: bytes, outputs: int, threads: int | None = None) -> None:
        super().__init__()
        self.model, self.outputs = model, outputs
        self.set_threads(threads)
        self.dtype_marker = nn.Parameter(torch.zeros(0), requires_grad=False)

    def set_threads(self, threads: int | None) -> None:
        """(Re)open the session with `threads` intra-op workers (None: ORT's default, every core)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        # No spin-waiting between runs: the cascade interleaves net calls with torch resizes and NMS, and idle ORT
        # workers spinning on the same cores would slow those down (2.5x slower detections measured with spinning).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.model, options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.shape[0] == 0:  # ORT refuses an empty batch; the torch nets return empty outputs
            raise ValueError("empty batch")  # detect_face never sends one: it checks len(boxes) first
        got = self.session.run(None, {"input": np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})
        return tuple(torch.from_numpy(o).to(x.device) for o in got[: self.outputs])


def use_onnx(mtcnn: nn.Module, threads: int | None = None) -> nn.Module:
    """Replace `mtcnn`'s pnet, rnet and onet with ONNX Runtime sessions of the same weights; returns `mtcnn`."""
    for kind in ("pnet", "rnet", "onet"):
        net = getattr(mtcnn, kind)
        setattr(mtcnn, kind, OrtNet(export(net, kind), len(OUTPUTS[kind]), threads))
    return mtcnn
