"""The prepared GPU check (run through benchmarks/gpu_check.sh): engines at fp16 and the live pipeline at scale.

On a CUDA machine, within its time budget (default 7 min, under the script's 8), it
1. reports what the machine holds (Python, torch, CUDA device, tensorrt, PyAV, facenet-pytorch, ONNX Runtime);
2. builds, for each available engine (weights present, or `xception-140k` with random weights in the card's
   layout), TensorRT fp16 engines where `tensorrt` imports, or else runs the CUDA torch path at fp16 under CUDA
   graphs (one captured graph per batch size), and says which path ran;
3. checks each against torch fp32 (max |p(fake) difference| on the same crops) and times both;
4. runs the real scheduler (MTCNN on CUDA, the fastest engine path) on 16, 64 and 128 synthetic 720p30 streams
   and prints fps, latency, GPU memory and utilisation.

It assumes nothing of this project's pins: every optional part is feature-detected and a missing one skips its
step with the reason. Without PyAV the frames are synthesised in memory (shared face photos pasted on a plain
background when ../shared is there, else plain frames, on which no face is found and the engines idle).
`--dry-run` runs the same steps on the CPU at toy sizes, to check the script itself where no GPU is (CI does).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's packages, not this folder's engines.py benchmark

import numpy as np
import torch

SHARED = ROOT.parent / "shared"
STREAMS = (16, 64, 128)
WIDTH, HEIGHT, FPS = 1280, 720, 30
PARITY_TOL = 0.02  # fp16 against fp32, in p(fake)
GRAPH_BATCHES = (1, 8, 32, 128)  # batch sizes captured as CUDA graphs; a batch is padded up to the next one
TIMING_BATCH = 32
BUDGET_S = 420.0  # the shell wrapper kills at 480 s


def say(text: str = "") -> None:
    print(text, flush=True)


def probe(module: str) -> tuple[object | None, str]:
    """Import `module`; (module, version) or (None, why not). facenet-pytorch is imported as the detector does,
    with the project's torchvision stand-in where torchvision cannot import."""
    try:
        if module == "facenet_pytorch":
            from stream.live.faces import tv_compat

            with tv_compat.standin():
                m = importlib.import_module(module)
        else:
            m = importlib.import_module(module)
    except Exception as exc:  # an import can fail with anything (a CUDA mismatch, a missing .so)
        return None, f"absent ({type(exc).__name__}: {exc})".splitlines()[0][:160]
    return m, str(getattr(m, "__version__", "present"))


def report_machine(dry_run: bool) -> dict:
    cuda = torch.cuda.is_available()
    say(f"python {platform.python_version()} | torch {torch.__version__} (CUDA build {torch.version.cuda})")
    if cuda:
        p = torch.cuda.get_device_properties(0)
        say(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
    else:
        say("GPU: absent (torch.cuda.is_available() is False)" + (": dry run on the CPU at toy sizes" if dry_run
                                                                    else ""))
    found = {}
    for name in ("tensorrt", "av", "facenet_pytorch", "onnxruntime", "pydantic", "timm", "transformers"):
        found[name], version = probe(name)
        say(f"  {name:<16} {version}")
    if found["onnxruntime"] is not None:
        say(f"  ORT providers    {found['onnxruntime'].get_available_providers()}")
    return {"cuda": cuda, **found}


# --- engines -------------------------------------------------------------------------------------------------
def available_engines(weights_dir: Path | None, device: str, only: list[str] | None) -> list:
    """Every registry engine whose weights are here (no download), plus xception-140k with random weights."""
    from engines.registry import MODELS, build_engine

    out = []
    for name in only or list(MODELS):
        try:
            out.append(build_engine(name, weights_dir=weights_dir, device=device, allow_download=False))
        except Exception as exc:
            if name == "xception-140k":
                from engines.architectures.xception_140k import Xception140k

                path = Path(tempfile.mkdtemp()) / "random_xception.pth"
                torch.save(Xception140k().state_dict(), path)
                out.append(build_engine(name, weights_file=path, device=device))
                say(f"  {name}: random weights in the card's layout (speed and parity do not depend on values)")
            elif only:
                say(f"  {name}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    frame_engines = [e for e in out if getattr(e, "spec", None) is not None and e.spec.frames == 1]
    say(f"engines available: {', '.join(e.name for e in frame_engines) or 'none'}")
    return frame_engines


class GraphedEngine:
    """A TorchEngine at fp16 replayed through CUDA graphs: one graph per batch size in GRAPH_BATCHES, a batch
    padded up to the next captured size. Same preprocessing and labels as the engine; only the network's call
    changes, so its scores are comparable with the fp32 engine's."""

    def __init__(self, engine, batches=GRAPH_BATCHES) -> None:
        from engines.base import Engine

        self.name, self.spec, self.labels = engine.name, engine.spec, engine.labels
        self.quality = getattr(engine, "quality", None)
        self.engine = engine.to_half()
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self.check_batch = types.MethodType(Engine.check_batch, self)
        side = torch.cuda.Stream()
        module = self.engine.module
        with torch.inference_mode():
            for b in batches:
                static = torch.zeros(b, 3, self.spec.size, self.spec.size, device="cuda", dtype=torch.half)
                static = static.contiguous(memory_format=torch.channels_last)
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):  # warm-up outside the graph (cuDNN picks its kernels)
                        module(static)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    out = module(static)
                self._graphs[b] = (graph, static, out)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        n = len(crops)
        if n == 0:
            return np.zeros((0,), dtype=np.float32)
        outs = []
        biggest = max(self._graphs)
        with torch.inference_mode():
            for start in range(0, n, biggest):
                part = crops[start:start + biggest]
                b = min(k for k in self._graphs if k >= len(part))
                graph, static, out = self._graphs[b]
                x = self.engine.preprocess(part)
                static[: len(part)].copy_(x)
                graph.replay()
                outs.append(self.labels.to_p_fake(out[: len(part)].float()).cpu().numpy())
        return np.concatenate(outs).astype(np.float32)


def sample_crops(size: int, count: int) -> np.ndarray:
    """Face photos from ../shared resized to the engine's crop (real faces make parity meaningful), else noise."""
    photos = sorted(glob.glob(str(SHARED / "data" / "faces" / "*" / "*.jpg")))[:count]
    if photos:
        from PIL import Image

        crops = [np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p in photos]
        while len(crops) < count:
            crops += crops[: count - len(crops)]
        return np.stack(crops)
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def median_ms(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def check_engines(engines, info: dict, device: str, repeats: int, batch: int) -> dict:
    """Fast path per engine, parity against fp32 and ms per item for both. Returns name -> fast engine."""
    from engines.backends import prepare

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fast: dict = {}
    say(f"{'engine':<22}{'path':<34}{'max |dp| vs fp32':>18}{'fp32 ms/item':>14}{'fast ms/item':>14}  parity")
    for engine in engines:
        crops = sample_crops(engine.spec.size, batch)
        ref = engine.predict(crops)
        fp32_ms = median_ms(lambda: engine.predict(crops), repeats, sync) / batch
        try:
            if device != "cuda":
                path, candidate = "cpu dry run: torch fp32 eager", engine
            elif info["tensorrt"] is not None:
                path = "TensorRT fp16"
                candidate = prepare(engine, "tensorrt", "fp16", cache_dir=Path(tempfile.mkdtemp()))
            else:
                path = "CUDA torch fp16 + CUDA graphs"
                import copy

                candidate = GraphedEngine(copy.deepcopy(engine))
            got = candidate.predict(crops)
            diff = float(np.max(np.abs(got - ref)))
            fast_ms = median_ms(lambda: candidate.predict(crops), repeats, sync) / batch
            ok = "PASS" if diff <= PARITY_TOL else f"FAIL (> {PARITY_TOL})"
            fast[engine.name] = candidate
        except Exception as exc:
            path, diff, fast_ms, ok = f"failed: {type(exc).__name__}: {str(exc)[:60]}", math.nan, math.nan, "-"
        say(f"{engine.name:<22}{path:<34}{diff:>18.4f}{fp32_ms:>14.2f}{fast_ms:>14.2f}  {ok}")
    return fast


# --- live at scale -------------------------------------------------------------------------------------------
def synthetic_frames(count: int, width: int, height: int, use_av: bool) -> tuple[list[np.ndarray], str]:
    """A pool of RGB frames the synthetic cameras cycle through: decoded from the shared clips with PyAV where
    it and they are here, else face photos pasted on a plain background, else plain frames."""
    from PIL import Image

    videos = sorted(glob.glob(str(SHARED / "data" / "ffpp-c23" / "*" / "*.mp4")))
    if use_av and videos:
        import av

        frames = []
        for k in range(count):
            with av.open(videos[k % len(videos)]) as c:
                for i, f in enumerate(c.decode(video=0)):
                    if i == 10 * (k // len(videos)):
                        frames.append(np.asarray(f.to_image().resize((width, height))))
                        break
        return frames, f"{len(frames)} frames decoded with PyAV from the shared FF++ clips"
    photos = sorted(glob.glob(str(SHARED / "data" / "faces" / "*" / "*.jpg")))
    frames = []
    for k in range(count):
        image = np.full((height, width, 3), 90, dtype=np.uint8)
        if photos:
            side = height // 3
            face = np.asarray(Image.open(photos[k % len(photos)]).convert("RGB").resize((side, side)))
            x, y = (width // 5 + 37 * k) % (width - side), (height // 4 + 23 * k) % (height - side)
            image[y:y + side, x:x + side] = face
        frames.append(image)
    what = "shared face photos pasted on a plain background" if photos else "plain frames (no face: engines idle)"
    return frames, f"{count} synthetic frames, {what}"


class Feeder:
    """One thread delivering the frame pool to every synthetic camera at `fps` (one thread, not one per camera,
    so 128 cameras cost the host little)."""

    def __init__(self, sources, frames, fps: float) -> None:
        self.sources, self.frames, self.fps = sources, frames, fps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from stream.live.sources import Frame

        i, t0 = 0, time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            for k, s in enumerate(self.sources):
                image = self.frames[(i + k) % len(self.frames)]
                s.deliver(Frame.of(image=image, pts=i, time=i / self.fps, index=i, received=now))
            i += 1
            self._stop.wait(max(0.0, t0 + i / self.fps - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class GpuSampler:
    """Utilisation and memory from NVML (pynvml) or nvidia-smi, sampled every 0.5 s on a thread."""

    def __init__(self) -> None:
        self.util: list[float] = []
        self.mem_mib: list[float] = []
        self._stop = threading.Event()
        self._read = self._reader()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _reader(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)

            def read():
                u = pynvml.nvmlDeviceGetUtilizationRates(handle)
                return float(u.gpu), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            return read
        except Exception:
            pass
        if shutil.which("nvidia-smi"):
            def read():
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits", "-i", "0"],
                                     capture_output=True, text=True, timeout=5).stdout.split(",")
                return float(out[0]), float(out[1])
            return read
        return None

    def start(self) -> None:
        if self._read is not None:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                u, m = self._read()
                self.util.append(u)
                self.mem_mib.append(m)
            except Exception:
                return

    def stop(self) -> str:
        self._stop.set()
        if self._read is None:
            return "GPU utilisation: no NVML or nvidia-smi"
        self._thread.join(2)
        if not self.util:
            return "GPU utilisation: no sample"
        return (f"GPU util mean {np.mean(self.util):.0f} % / max {np.max(self.util):.0f} %, "
                f"memory used max {np.max(self.mem_mib):.0f} MiB")


def live_at_scale(engine, streams: int, frames, device: str, seconds: float, warmup: float, fps: float,
                  pipeline: str) -> dict:
    """The real scheduler on `streams` synthetic 720p30 cameras; per-stream rates and latencies."""
    from engines.quality import smallest_floor_px
    from stream.config.faces import DetectorConfig
    from stream.config.scheduler import SchedulerConfig
    from stream.live.faces import FaceDetector
    from stream.live.scheduler.loop import Scheduler
    from stream.messages import Overlay
    from stream.live.sources.buffer import LatestFrameBuffer
    from stream.live.sources.live import StreamSource

    class Camera(StreamSource):
        def __init__(self, name: str) -> None:
            super().__init__(name, f"synthetic:{name}", LatestFrameBuffer(), fps)

        def start(self) -> None:
            pass

        def stop(self) -> None:
            pass

    latencies: list[float] = []
    faces = [0]
    measuring = [False]

    def publish(msg: object) -> None:
        if isinstance(msg, Overlay) and measuring[0]:
            latencies.append(msg.latency_ms)
            faces[0] += len(msg.faces)

    detector = FaceDetector(DetectorConfig(device=device), smallest_floor_px([engine]))
    sched = Scheduler(detector, [engine], publish, SchedulerConfig(pipeline=pipeline))
    cams = [Camera(f"cam{i}") for i in range(streams)]
    for c in cams:
        sched.add(c)
    feeder = Feeder(cams, frames, FPS)
    sampler = GpuSampler()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    feeder.start()
    sched.start()
    try:
        time.sleep(warmup)
        received0 = sum(c.buffer.received for c in cams)
        measuring[0] = True
        sampler.start()
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        measuring[0] = False
        gpu = sampler.stop()
        received = sum(c.buffer.received for c in cams) - received0
    finally:
        sched.stop()
        feeder.stop()
    lat = np.asarray(latencies or [math.nan])
    g = sched.governor
    return {"streams": streams, "displayed": received / elapsed / streams, "analysed": len(latencies) / elapsed / streams,
            "p50": float(np.nanpercentile(lat, 50)), "p95": float(np.nanpercentile(lat, 95)),
            "faces": faces[0], "load": g.utilisation, "scale": g.scale,
            "shed": sum(c.shed for c in sched.streams()), "gpu": gpu,
            "torch_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else math.nan}


# --- main ----------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="no GPU needed: CPU, toy sizes (checks the script)")
    parser.add_argument("--streams", type=int, nargs="+", default=None, help=f"default {STREAMS}")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per live run (default 20)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before measuring (default 8)")
    parser.add_argument("--fps", type=float, default=5.0, help="target analysed fps per stream")
    parser.add_argument("--engines", nargs="+", default=None, help="registry names (default: every available one)")
    parser.add_argument("--weights-dir", type=Path, default=SHARED / "weights" / "mesonet")
    parser.add_argument("--pipeline", default="serial", choices=("serial", "overlapped"))
    parser.add_argument("--no-av", action="store_true", help="synthesise frames even where PyAV imports")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="skip live runs that would pass this")
    args = parser.parse_args()
    start = time.monotonic()

    say("== machine")
    info = report_machine(args.dry_run)
    if not info["cuda"] and not args.dry_run:
        say("no CUDA device: nothing GPU-side can run here (use --dry-run to check the script on the CPU)")
        return 3
    if info["pydantic"] is None:
        say("the project cannot import without pydantic: carry its wheels (see benchmarks/gpu_check.sh)")
        return 4
    device = "cuda" if info["cuda"] else "cpu"
    if args.dry_run:
        streams, seconds, warmup, repeats, batch = args.streams or [2], args.seconds or 2.0, args.warmup or 2.0, 2, 4
        only = args.engines or ["meso4-df"]
    else:
        streams, seconds, warmup, repeats, batch = (args.streams or list(STREAMS), args.seconds or 20.0,
                                                    args.warmup or 8.0, 10, TIMING_BATCH)
        only = args.engines
    say(f"path: {'TensorRT fp16' if info['cuda'] and info['tensorrt'] else 'CUDA torch fp16 + CUDA graphs' if info['cuda'] else 'cpu dry run (torch fp32, no GPU)'}")

    say("\n== engines: fast path against torch fp32")
    engines = available_engines(args.weights_dir, device, only)
    fast = check_engines(engines, info, device, repeats, batch) if engines else {}

    say("\n== live at scale")
    if info["facenet_pytorch"] is None:
        say("skipped: facenet-pytorch is absent (carry its wheel)")
        return 0
    if not fast:
        say("skipped: no engine ran")
        return 0
    if info["av"] is None or args.no_av:
        # The scheduler imports the evidence writer, which imports PyAV at module level; it never writes a clip
        # here (no alert manager), so a module that fails on use stands in where PyAV is absent.
        if info["av"] is None:
            sys.modules["av"] = _absent("av", "PyAV is absent on this machine")
    name = min(fast, key=lambda n: n != "meso4-df")  # meso4-df if it ran, as in the CPU targets
    frames, what = synthetic_frames(8, WIDTH, HEIGHT, use_av=info["av"] is not None and not args.no_av)
    say(f"engine {name} ({type(fast[name]).__name__}), MTCNN on {device}, {args.pipeline} pipeline, target "
        f"{args.fps} analysed fps per stream; frames: {what}")
    say(f"{'streams':>8}{'displayed fps':>15}{'analysed fps':>14}{'p50 ms':>9}{'p95 ms':>9}{'faces':>8}"
        f"{'load':>7}{'scale':>7}{'shed':>6}  torch peak MiB | GPU")
    for n in streams:
        if time.monotonic() - start + warmup + seconds + 20 > args.budget_s:
            say(f"{n:>8}  skipped: would pass the {args.budget_s:.0f} s budget")
            continue
        r = live_at_scale(fast[name], n, frames, device, seconds, warmup, args.fps, args.pipeline)
        say(f"{n:>8}{r['displayed']:>15.1f}{r['analysed']:>14.2f}{r['p50']:>9.0f}{r['p95']:>9.0f}{r['faces']:>8}"
            f"{r['load']:>7.2f}{r['scale']:>7.2f}{r['shed']:>6}  {r['torch_peak_mib']:.0f} | {r['gpu']}")
    say(f"\ndone in {time.monotonic() - start:.0f} s")
    return 0


def _absent(name: str, why: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def fail(attr: str):
        if attr.startswith("__"):  # introspection (inspect.getmodule, torch.onnx.export's) asks every module
            raise AttributeError(attr)
        raise ImportError(f"{why} ({name}.{attr} was used)")

    module.__getattr__ = fail  # type: ignore[attr-defined]
    return module


if __name__ == "__main__":
    sys.exit(main())
