"""Engine throughput per backend (torch fp32 CPU, ONNX Runtime fp32, ONNX Runtime int8): ms/item, items/s, GFLOP/s.

Run: .venv/bin/python benchmarks/engines.py [--engines NAME...] [--batches 1 8] [--repeats 4]
     [--weights-dir ../shared/weights/mesonet] [--cache-dir DIR] [--int8-all]

What is measured (time.perf_counter, CPU only):
- Every figure times `engine.predict(uint8 crops)`, the call the scanner makes: normalisation, the network and the
  p_fake mapping, identical around all backends (they share `engines.base.normalise` and the LabelMapping).
- Inputs are real MTCNN face crops from the shared FF++ videos, cut at each engine's size (the same crops
  calibrate int8). Content does not change the speed of these networks; it keeps int8 calibration honest.
- Per engine and batch size, the backends are timed side by side in the same run, in blocks: each block is one
  warm-up call then consecutive timed calls. Two passes, the backends in order then in reverse order, share the
  `--repeats` timed calls, so a load change during the run does not land on one backend only. ms/item is the
  median call time over the batch size (items/s its inverse); "best" is the fastest call, the figure least
  inflated by other processes on a shared machine. Not call-by-call round-robin: after a call, ORT's and torch's
  worker threads keep spinning for a while, and on 2 cores that starves whichever backend runs next (measured:
  torch's meso4-df call went from ~14 ms to ~290 ms when alternated with ORT); each block's warm-up absorbs it.
- FLOPs are counted by the benchmark itself: forward hooks on every nn.Conv2d and nn.Linear of the torch module
  during one single-item pass, 2 x multiply-adds (Conv2d: output elements x in_channels/groups x kernel area;
  Linear: output elements x in_features). BN, pooling, activations and adds are not counted (Xception: < 1%).
  GFLOP/s = FLOPs per item x items/s; int8 rows use the same count (operations, not bytes).
- "x ORT fp32" is items/s over ORT fp32's items/s for the same engine and batch in this run: the fraction of the
  ORT fp32 rate for torch, the int8 speed-up for int8.

Engines: every registry entry that builds offline. xception-140k's published weights cannot be fetched here, so
it runs with random weights in the card's layout (weights do not change the speed). Registry entries sharing an
architecture with one already run (meso4-f2f...) are skipped by default as their speed is the same; name them with
--engines to run them anyway. int8 runs for the Xception engines (all engines with --int8-all).
The ICPR EfficientNet-B4 entries (effb4-*, effb4st-*, effb4att-*, effb4attst-*, effb4-ensemble-*) and GenD
(gend-clip-l14, gend-dinov3-l) also run with random weights in their published layouts (full-size backbone configs
for GenD); gend-pe-l needs timm and is skipped where timm cannot import. "peak +MB" is the extra resident memory
of the process during a backend's calls (sampled every 2 ms), on top of the loaded weights given in the notes.

Targets (issue 3, this 2-core machine): Xception engines on torch at >= 90% of the ORT fp32 rate (ORT fp32 measured
at about 86 ms per 299^2 frame when the issue was written), and int8 at >= 2x the ORT fp32 rate.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from engines.base import Engine, InputSpec, TorchEngine  # noqa: E402
from engines.registry import MODELS, ModelEntry, build_engine, get_entry  # noqa: E402

SHARED = REPO.parent / "shared"
DEFAULT_VIDEOS = str(SHARED / "data" / "ffpp-c23" / "*" / "*.mp4")
DEFAULT_WEIGHTS_DIR = SHARED / "weights" / "mesonet"
DEFAULT_REPEATS = 4  # 2 per pass; keeps the defaults under ~4 min on 2 shared cores
DEFAULT_BATCHES = (1, 8)
FRAMES_PER_VIDEO = 2  # sampled frames (at 1 fps) searched for faces per video
CALIBRATION_CROPS = 8  # int8 calibration set: enough for MinMax ranges, ~30 s to quantise Xception here
CONSOLE_WIDTH = 130
RANDOM_SEED = 0
MEMORY_SAMPLE_S = 0.002

TORCH, ORT_FP32, ORT_INT8 = "torch fp32", "ORT fp32", "ORT int8"
TORCH_TARGET = 0.90  # x ORT fp32 rate, Xception engines on torch
INT8_TARGET = 2.0  # x ORT fp32 rate, Xception engines int8
FMA_FLOP_PER_CYCLE_AVX2 = 32  # 2 FMA units x 8 fp32 lanes x 2 FLOPs
FMA_FLOP_PER_CYCLE_AVX512 = 64
ISSUE_ORT_FP32_MS = 86.0  # ms per 299^2 frame, ORT fp32, as measured when the issue was written


@dataclass
class Subject:
    """One engine to benchmark: its backends (name -> Engine), FLOPs per item and notes for the report."""

    name: str
    entry: ModelEntry
    flops: float
    backends: dict[str, Engine] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def is_xception(self) -> bool:
        return self.entry.architecture.startswith("xception")


@dataclass(frozen=True)
class Result:
    engine: str
    backend: str
    batch: int
    ms_per_item: float
    best_ms_per_item: float
    items_per_s: float
    gflops: float
    vs_ort: float | None
    target: str
    met: str
    peak_mb: float = 0.0  # extra resident memory during the calls (PeakRSS)


# ---------------------------------------------------------------- FLOPs


def count_flops(module: torch.nn.Module, spec: InputSpec) -> float:
    """2 x multiply-adds of every Conv2d and Linear in one single-item forward pass of `module` (on CPU, fp32)."""
    macs = 0

    def conv_hook(m: torch.nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal macs
        kh, kw = m.kernel_size
        macs += output.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: torch.nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal macs
        macs += output.numel() * m.in_features

    hooks = []
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    frame = (3, spec.size, spec.size)
    item = frame if spec.frames == 1 else (spec.frames, *frame)
    param = next(module.parameters())
    try:
        with torch.inference_mode():
            module(torch.zeros(1, *item, device=param.device, dtype=param.dtype))
    finally:
        for h in hooks:
            h.remove()
    return 2.0 * macs


# ---------------------------------------------------------------- inputs


def face_crops(videos: Sequence[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, best face box) pairs from the first FRAMES_PER_VIDEO frames sampled at 1 fps of each video."""
    from stream.live.faces import FaceDetector
    from stream.live.sources import AVSource

    detector = FaceDetector()
    pairs = []
    for video in videos:
        frames = []
        for frame in AVSource(video, sample_fps=1.0).frames():
            frames.append(frame.image)
            if len(frames) == FRAMES_PER_VIDEO:
                break
        for image, faces in zip(frames, detector.detect(frames)):
            if faces:
                pairs.append((image, max(faces, key=lambda d: d.prob).box))
    return pairs


def crops_for(spec: InputSpec, detections: Sequence[tuple[np.ndarray, np.ndarray]], count: int) -> np.ndarray:
    """`count` uint8 items for `spec`: real face crops cycled (clips repeat the crops over time for temporal specs)."""
    from stream.live.faces import crop_faces

    if detections:
        found = np.concatenate([crop_faces(img, [box], spec.size, spec.margin) for img, box in detections])
    else:
        found = np.random.default_rng(RANDOM_SEED).integers(0, 256, (count, spec.size, spec.size, 3), np.uint8)
    items = found[np.arange(count) % len(found)]
    if spec.frames == 1:
        return items
    idx = (np.arange(count)[:, None] + np.arange(spec.frames)[None, :]) % len(found)
    return found[idx]


# ---------------------------------------------------------------- engines


def random_xception_140k(weights_dir: Path) -> tuple[TorchEngine, str]:
    """xception-140k with seeded random weights saved in the card's state-dict layout, through the registry path."""
    from engines.architectures.xception_140k import Xception140k

    torch.manual_seed(RANDOM_SEED)
    path = weights_dir / "random_best_xception.pth"
    torch.save(Xception140k().state_dict(), path)
    engine = build_engine("xception-140k", weights_file=path)
    return engine, "random weights in the card's layout (published file not available offline)"


ICPR_NOTE = "random weights in the authors' fornet layout (published file not available offline)"


def random_icpr(name: str) -> Callable[[Path], tuple[TorchEngine, str]]:
    """An ICPR EfficientNet-B4 entry (or ensemble) with seeded random weights saved as the authors' state dicts."""

    def build(weights_dir: Path) -> tuple[TorchEngine, str]:
        from engines.architectures.efficientnet_b4 import NETWORKS, build_ensemble

        entry = get_entry(name)
        archs = [entry.architecture] if entry.architecture in NETWORKS else list(NETWORKS)
        paths = {}
        for arch in archs:
            torch.manual_seed(RANDOM_SEED)
            paths[arch] = weights_dir / f"random_{arch}.pth"
            torch.save(NETWORKS[arch]().state_dict(), paths[arch])
        if len(archs) == 1:
            return build_engine(name, weights_file=paths[archs[0]]), ICPR_NOTE
        main, *rest = archs
        return build_ensemble(paths[main], entry, extra_paths={a: paths[a] for a in rest}), ICPR_NOTE

    return build


# Full-size GenD backbones (the published configs' dimensions), random weights: the speed of the real models.
GEND_BACKBONES = {
    "gend-clip-l14": ("clip", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                   num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768,
                                   hidden_act="quick_gelu")),
    "gend-dinov3-l": ("dinov3", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                     num_attention_heads=16, patch_size=16, image_size=224, num_register_tokens=4,
                                     layerscale_value=1.0, rope_theta=100.0)),
}


def random_gend(name: str) -> Callable[[Path], tuple[TorchEngine, str]]:
    """A GenD folder (config.json + model.safetensors) with a full-size random backbone saved beside it."""

    def build(weights_dir: Path) -> tuple[TorchEngine, str]:
        import json

        from safetensors.torch import save_file
        from transformers import CLIPVisionConfig, DINOv3ViTConfig

        from engines.architectures.gend import CLIPFeatures, DINOFeatures, GenDNetwork

        kind, dims = GEND_BACKBONES[name]
        backbone = weights_dir / f"{name}-backbone"
        config = (CLIPVisionConfig if kind == "clip" else DINOv3ViTConfig)(**dims)
        config.save_pretrained(backbone)
        torch.manual_seed(RANDOM_SEED)
        net = GenDNetwork(CLIPFeatures(config) if kind == "clip" else DINOFeatures(config), normalize=True)
        folder = weights_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(
            {"model_type": "GenD", "backbone": str(backbone), "head": "LinearNorm"}))
        del net
        return build_engine(name, weights_file=folder), "random weights, full-size backbone config (not offline)"

    return build


RANDOM_WEIGHT_BUILDERS: dict[str, Callable[[Path], tuple[TorchEngine, str]]] = {
    "xception-140k": random_xception_140k,
    **{name: random_icpr(name) for name in MODELS if name.startswith("effb4")},
    **{name: random_gend(name) for name in GEND_BACKBONES},
}


def build_torch(name: str, weights_dir: Path, scratch: Path) -> tuple[TorchEngine, str]:
    """The engine from its real weights when present offline, else from random weights where a builder exists."""
    try:
        engine = build_engine(name, weights_dir=weights_dir, allow_download=False)
        note = "published weights"
    except Exception as e:  # WeightsUnavailable, ChecksumMismatch, missing optional framework...
        if name not in RANDOM_WEIGHT_BUILDERS:
            raise
        engine, note = RANDOM_WEIGHT_BUILDERS[name](scratch)
        note += f" [{type(e).__name__}]"
    if not isinstance(engine, TorchEngine):
        raise TypeError(f"{type(engine).__name__} is not a torch-module engine; cannot export or count FLOPs")
    return engine, note


def select_engines(requested: Sequence[str] | None, console: Console) -> list[str]:
    """The engine names to run: those requested, or one registry entry per architecture."""
    if requested:
        for name in requested:
            get_entry(name)  # unknown names fail here with the list of known ones
        return list(requested)
    chosen, seen = [], {}
    for name, entry in MODELS.items():
        if entry.architecture in seen:
            console.print(f"skip {name}: same architecture as {seen[entry.architecture]} (same speed)", highlight=False)
            continue
        seen[entry.architecture] = name
        chosen.append(name)
    return chosen


# ---------------------------------------------------------------- timing


class PeakRSS:
    """Highest resident set size of this process, sampled every MEMORY_SAMPLE_S while in the `with` block, minus the
    size on entry: the extra memory the calls need (activations, workspaces) on top of what is already loaded."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.extra_mb = 0.0

    def __enter__(self) -> "PeakRSS":
        import threading

        self._base = self._peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_S):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        self.extra_mb = (self._peak - self._base) / 2**20


def time_backends(backends: dict[str, Engine], items: np.ndarray, repeats: int,
                  memory: dict[str, float] | None = None) -> dict[str, list[float]]:
    """Seconds per timed call of each backend on `items`: blocks of one warm-up then consecutive calls, in two
    passes (backends in order, then reversed) sharing `repeats` timed calls per backend. `memory`, if given, gets
    each backend's peak extra RSS (MB) over its calls, warm-up included."""
    runs: dict[str, list[float]] = {name: [] for name in backends}
    passes = [(list(backends), (repeats + 1) // 2), (list(reversed(backends)), repeats // 2)]
    for order, calls in passes:
        if calls == 0:
            continue
        for name in order:
            engine = backends[name]
            with PeakRSS() as peak:
                engine.predict(items)
                for _ in range(calls):
                    start = time.perf_counter()
                    engine.predict(items)
                    runs[name].append(time.perf_counter() - start)
            if memory is not None:
                memory[name] = max(memory.get(name, 0.0), peak.extra_mb)
    return runs


def measure(subject: Subject, batches: Sequence[int], repeats: int, detections) -> list[Result]:
    results = []
    for batch in batches:
        items = crops_for(subject.entry.input, detections, batch)
        memory: dict[str, float] = {}
        runs = time_backends(subject.backends, items, repeats, memory)
        seconds = {backend: statistics.median(r) for backend, r in runs.items()}
        ort_rate = batch / seconds[ORT_FP32] if ORT_FP32 in seconds else None
        for backend, s in seconds.items():
            rate = batch / s
            vs = rate / ort_rate if ort_rate and backend != ORT_FP32 else None
            target, met = "", ""
            if subject.is_xception and vs is not None:
                goal = TORCH_TARGET if backend == TORCH else INT8_TARGET
                target, met = f">= {goal:.2f}x", "yes" if vs >= goal else "NO"
            results.append(Result(subject.name, backend, batch, 1e3 * s / batch, 1e3 * min(runs[backend]) / batch,
                                  rate, subject.flops * rate / 1e9, vs, target, met, memory.get(backend, 0.0)))
    return results


# ---------------------------------------------------------------- report


def cpu_context(threads: int, load_before: float) -> str:
    model, flags, mhz = platform.processor() or platform.machine(), set(), 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu MHz"):
                mhz = float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    cpus = len(os.sched_getaffinity(0))
    load_after = os.getloadavg()[0]
    busy = " (busier than the CPU count: figures are contended)" if max(load_before, load_after) > cpus else ""
    peak = ""
    if mhz and {"avx2", "fma"} <= flags:
        flop_per_cycle = FMA_FLOP_PER_CYCLE_AVX512 if "avx512f" in flags else FMA_FLOP_PER_CYCLE_AVX2
        peak = (f"\nnominal fp32 peak ~{cpus * mhz * flop_per_cycle / 1e3:.0f} GFLOP/s ({cpus} CPUs x {mhz:.0f} MHz x "
                f"{flop_per_cycle} FLOP/cycle: two FMA units assumed, no boost clock)")
    return (
        f"{model} | {platform.machine()} {' '.join(isa)} | os.cpu_count {os.cpu_count()}, usable CPUs {cpus}\n"
        f"torch {torch.__version__}: {torch.get_num_threads()} threads (interop {torch.get_num_interop_threads()}) "
        f"| onnxruntime {ort.__version__}: intra-op threads {threads}, CPUExecutionProvider\n"
        f"1-min load average {load_before:.2f} before, {load_after:.2f} after{busy}"
        + peak
    )


def render(results: Sequence[Result], repeats: int) -> Table:
    table = Table(title=f"engine throughput, CPU: median (and best) of {repeats} timed calls per backend")
    columns = [("engine", "left"), ("backend", "left"), ("batch", "right"), ("ms/item", "right"),
               ("best", "right"), ("items/s", "right"), ("GFLOP/s", "right"), ("x ORT fp32", "right"),
               ("target", "right"), ("met", "left"), ("peak +MB", "right")]
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    last = None
    for r in results:
        if last is not None and (r.engine, r.batch) != last:
            table.add_section()
        last = (r.engine, r.batch)
        table.add_row(r.engine, r.backend, str(r.batch), f"{r.ms_per_item:.1f}", f"{r.best_ms_per_item:.1f}",
                      f"{r.items_per_s:.1f}", f"{r.gflops:.1f}", "" if r.vs_ort is None else f"{r.vs_ort:.2f}",
                      r.target, r.met, f"{r.peak_mb:.0f}")
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", nargs="+", metavar="NAME", help="registry names (default: one per architecture)")
    p.add_argument("--batches", nargs="+", type=int, default=list(DEFAULT_BATCHES))
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    p.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR)
    p.add_argument("--videos", default=DEFAULT_VIDEOS, metavar="GLOB", help="videos to cut face crops from")
    p.add_argument("--cache-dir", type=Path, help="keep ONNX exports and int8 models here (default: a temp dir)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and ORT intra-op threads")
    p.add_argument("--int8-all", action="store_true", help="quantise every engine, not only the Xception ones")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or any(b < 1 for b in args.batches):
        p.error("--repeats, --threads and every --batches value must be >= 1")
    return args


def prepare(name: str, args, scratch: Path, cache: Path, detections, console: Console) -> Subject | None:
    from engines.onnx_backend import onnx_engine_for
    from engines.quantize import quantize_engine

    try:
        engine, note = build_torch(name, args.weights_dir, scratch)
    except Exception as e:
        console.print(f"skip {name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", highlight=False)
        return None
    subject = Subject(name, get_entry(name), count_flops(engine.module, engine.spec), notes=[note])
    weights_mb = sum(t.numel() * t.element_size() for t in engine.module.state_dict().values()) / 2**20
    subject.notes.append(f"{weights_mb:.0f} MB of fp32 weights")
    subject.backends[TORCH] = engine
    with console.status(f"{name}: exporting to ONNX"):
        subject.backends[ORT_FP32] = onnx_engine_for(engine, cache, intra_op_threads=args.threads)
    if subject.is_xception or args.int8_all:
        if not detections:
            subject.notes.append("int8 skipped: no real face crops to calibrate on")
        else:
            calibration = crops_for(engine.spec, detections, CALIBRATION_CROPS)
            with console.status(f"{name}: quantising to int8 ({len(calibration)} calibration crops)"):
                start = time.perf_counter()
                subject.backends[ORT_INT8] = quantize_engine(engine, calibration, cache, intra_op_threads=args.threads)
            subject.notes.append(f"int8 calibrated on {len(calibration)} real crops "
                                 f"(quantised or loaded from cache in {time.perf_counter() - start:.0f} s)")
    return subject


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    console = Console(width=CONSOLE_WIDTH)
    names = select_engines(args.engines, console)
    videos = sorted(Path(p) for p in glob.glob(args.videos))
    with console.status(f"detecting faces in {len(videos)} videos"):
        detections = face_crops(videos) if videos else []
    if not detections:
        console.print(f"no face found in {args.videos}: timing random crops, int8 skipped", highlight=False)

    results, subjects = [], []
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        cache = args.cache_dir or Path(tmp) / "cache"
        for name in names:
            subject = prepare(name, args, Path(tmp), cache, detections, console)
            if subject is None:
                continue
            subjects.append(subject)
            with console.status(f"{name}: timing {', '.join(subject.backends)}"):
                results += measure(subject, args.batches, args.repeats, detections)

    console.print(render(results, args.repeats))
    for s in subjects:
        console.print(f"{s.name}: {s.flops / 1e9:.2f} GFLOP/item (Conv2d+Linear, 2 x MACs); {'; '.join(s.notes)}",
                      highlight=False)
    for r in results:
        if r.engine in {s.name for s in subjects if s.is_xception} and r.backend == ORT_FP32:
            flops = next(s.flops for s in subjects if s.name == r.engine)
            console.print(f"{r.engine} ORT fp32 at batch {r.batch}: {r.ms_per_item:.1f} ms/item; issue's reference "
                          f"about {ISSUE_ORT_FP32_MS:.0f} ms per 299^2 frame "
                          f"(= {flops / ISSUE_ORT_FP32_MS / 1e6:.0f} GFLOP/s at this FLOP count)", highlight=False)
    console.print(f"targets (Xception engines): torch >= {TORCH_TARGET:.0%} of the ORT fp32 rate, "
                  f"int8 >= {INT8_TARGET:g}x the ORT fp32 rate", highlight=False)
    console.print(cpu_context(args.threads, load_before), highlight=False)


if __name__ == "__main__":
    main()
