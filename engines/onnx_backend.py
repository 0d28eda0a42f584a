"""ONNX Runtime backend (fp32): export any TorchEngine's module to ONNX and score crops with an InferenceSession.

The exported graph takes the already-normalised float batch, so preprocessing (`engines.base.normalise`) and the
LabelMapping stay shared with the torch backend and only the network itself changes hands. Only the batch axis
is dynamic: the crop size (and clip length) are fixed by the engine's InputSpec.
"""

from __future__ import annotations

import copy
import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from engines.base import Engine, InputSpec, LabelMapping, TorchEngine, channel_stats, normalise

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_AXIS_NAME = "batch"
# Traced with 2 items, not 1, so nothing in the graph can specialise on a batch of one.
EXPORT_BATCH = 2
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
WEIGHTS_DIGEST_CHARS = 16  # of the sha256 in cache file names: plenty to tell weight sets apart
SAME_PADS = {"SAME_UPPER", "SAME_LOWER"}


class OnnxModelError(ValueError):
    """An .onnx file is missing, unreadable, or does not take the input its engine's spec says it should."""


def item_shape(spec: InputSpec) -> tuple[int, ...]:
    """One network input item: (3, size, size) for frame scorers, (frames, 3, size, size) for temporal engines."""
    frame = (3, spec.size, spec.size)
    return frame if spec.frames == 1 else (spec.frames, *frame)


def _explicit_same_pads(model: onnx.ModelProto) -> None:
    """Rewrite Conv auto_pad=SAME_* as explicit pads, in place.

    torch's padding="same" exports as auto_pad=SAME_UPPER, which ORT's CPU Conv refuses together with dilation
    (MesoInception's dilated 3x3s). torch only allows "same" at stride 1, where the padding depends on the kernel
    alone: dilation * (kernel - 1) in total, the odd pixel after (SAME_UPPER) or before (SAME_LOWER).
    """
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("auto_pad", b"NOTSET").decode()
        if node.op_type != "Conv" or mode not in SAME_PADS:
            continue
        kernel = attrs["kernel_shape"]
        dilations = attrs.get("dilations", [1] * len(kernel))
        if any(s != 1 for s in attrs.get("strides", [1] * len(kernel))):
            raise NotImplementedError(f"{node.name}: auto_pad={mode} with stride > 1 needs the input size")
        totals = [d * (k - 1) for k, d in zip(kernel, dilations)]
        small = [t // 2 for t in totals]
        large = [t - s for t, s in zip(totals, small)]
        begins, ends = (small, large) if mode == "SAME_UPPER" else (large, small)
        kept = [a for a in node.attribute if a.name != "auto_pad"]
        del node.attribute[:]
        node.attribute.extend([*kept, onnx.helper.make_attribute("pads", begins + ends)])


def export_onnx(engine: TorchEngine, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export `engine.module` (on CPU, fp32, eval mode) to `path` with a dynamic batch axis; returns `path`.

    Uses the TorchScript exporter (dynamo=False), which needs no package beyond `onnx`. Its TracerWarnings about
    shape arithmetic (Keras "same" pooling) are silenced: those shapes are the spec's fixed crop size, and the
    parity tests at two batch sizes prove the batch axis stayed dynamic.
    """
    path = Path(path)
    module = engine.module
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in module.parameters()):
        module = copy.deepcopy(module).to("cpu", torch.float32)
    module.eval()
    dummy = torch.zeros(EXPORT_BATCH, *item_shape(engine.spec))
    batch = {0: BATCH_AXIS_NAME}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: batch, OUTPUT_NAME: batch}, opset_version=opset, dynamo=False,
        )
    model = onnx.load(str(path))
    _explicit_same_pads(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class OnnxEngine(Engine):
    """An Engine that runs an exported network in ONNX Runtime, with the torch engine's preprocessing and labels."""

    def __init__(
        self,
        name: str,
        path: Path,
        spec: InputSpec,
        labels: LabelMapping,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        intra_op_threads: int | None = None,
    ) -> None:
        self.name, self.path, self.spec, self.labels = name, Path(path), spec, labels
        if not self.path.is_file():
            raise OnnxModelError(f"{name}: ONNX model {self.path} not found")
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=list(providers))
        except Exception as e:  # ORT raises its own InvalidProtobuf / Fail / NoSuchFile pybind types
            raise OnnxModelError(
                f"{name}: {self.path} is not a readable ONNX model ({type(e).__name__}: {e})"
            ) from None
        self._check_input()
        self._mean, self._std = channel_stats(spec)

    def _check_input(self) -> None:
        """Refuse a file exported for another engine (other input name, crop size or clip length) at load time."""
        inputs = self.session.get_inputs()
        want = item_shape(self.spec)
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or tuple(inputs[0].shape[1:]) != want:
            got = [(i.name, i.shape) for i in inputs]
            raise OnnxModelError(f"{self.name}: {self.path} takes {got}, expected {INPUT_NAME!r} (N, {want})")

    def set_threads(self, intra_op_threads: int, spinning: bool = False) -> None:
        """Re-open the session with `intra_op_threads` workers. `spinning=False` stops idle workers from spin-waiting
        between runs, which matters when another stage (the face detector) runs on the same cores meanwhile."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=self.session.get_providers())

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.check_batch(crops)
        if len(crops) == 0:
            return np.zeros((0,), dtype=np.float32)
        x = normalise(crops, self._mean, self._std).numpy()
        (raw,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return self.labels.to_p_fake(torch.from_numpy(raw).float()).numpy().astype(np.float32)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, raw bytes): changes whenever the weights do."""
    h = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def onnx_engine_for(
    engine: TorchEngine,
    cache_dir: Path,
    opset: int = DEFAULT_OPSET,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    intra_op_threads: int | None = None,
) -> OnnxEngine:
    """The ORT twin of `engine`, exported once into `cache_dir` as NAME-WEIGHTSDIGEST-opsetN.onnx and reused.

    Export goes to a temporary name and is renamed into place, so an interrupted export never leaves a
    truncated file that later runs would take for a cached model.
    """
    cache_dir = Path(cache_dir)
    digest = weights_digest(engine.module)[:WEIGHTS_DIGEST_CHARS]
    path = cache_dir / f"{engine.name}-{digest}-opset{opset}.onnx"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            os.replace(export_onnx(engine, partial, opset), path)
        finally:
            partial.unlink(missing_ok=True)
    return OnnxEngine(engine.name, path, engine.spec, engine.labels, providers, intra_op_threads)
