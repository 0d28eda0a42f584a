"""What several commands share: exit codes, the engine options (weights, backend, precision, device, offline,
model) and their reading into `stream.live.assembly` (which builds the engines), the torch device and the rich
tables.

Every parser is built on every `dfstream` call, so this module imports nothing heavy: torch, engines and rich
are imported by the helpers that need them, when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.choices import BACKENDS, PRECISIONS

EXIT_OK = 0
EXIT_INPUT_FAILED = 1  # some input could not be scanned; the others were
EXIT_USAGE = 2  # bad arguments, unknown model, weights unavailable
PIPED_TABLE_WIDTH = 200


BACKEND_HELP = "auto: TensorRT, then CUDA torch, then ONNX Runtime on the CPU"
MODEL_HELP = ("model to run (repeatable; several are fused by mean p_fake). Default: auto, the strongest this machine "
              "runs (GenD on a CUDA GPU, effb4-dfdc on a CPU, else the best MesoNet file present, with a warning; "
              "`dfstream models list` shows the pick)")
WEIGHTS_DIR_HELP = "folder holding weight files (default: $DFSTREAM_WEIGHTS or ~/.cache/dfstream/weights)"
DEVICE_HELP = "torch device (default: cuda when available, else cpu)"

# (module, class) raised for bad input rather than a bug: reported in one line with EXIT_USAGE. Looked up only
# in modules already imported, so that handling them imports nothing (an exception's module is always loaded).
USAGE_ERRORS = (
    ("engines.registry", "UnknownModel"),
    ("engines.weights", "WeightsUnavailable"),
    ("engines.weights", "ChecksumMismatch"),
    ("engines.base", "WeightsFormatError"),
    ("engines.backends", "BackendUnavailable"),
    ("engines.efficientnet_compat", "EfficientNetIncompatible"),
    ("stream.live.sources", "SourceError"),
    ("stream.config.serve", "ConfigError"),
    ("engines.calibration", "CalibrationError"),
    ("stream.jobs.calibrate", "CalibrationFitError"),
)


def usage_errors() -> tuple[type[BaseException], ...]:
    loaded = (getattr(sys.modules[m], name, None) for m, name in USAGE_ERRORS if m in sys.modules)
    return (ValueError, *(cls for cls in loaded if cls is not None))


# -- options -------------------------------------------------------------------------------------------------

def add_model(p: argparse.ArgumentParser, help: str | None = MODEL_HELP) -> None:
    p.add_argument("--model", action="append", dest="models", metavar="NAME", help=help)


def add_weights_dir(p: argparse.ArgumentParser, help: str | None = WEIGHTS_DIR_HELP) -> None:
    p.add_argument("--weights-dir", type=Path, default=None, help=help)


def add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", type=Path, default=None,
                   help="use this weight file for the single model named (not checked against the registry hash)")


def add_offline(p: argparse.ArgumentParser, help: str | None = "never download missing weights") -> None:
    p.add_argument("--offline", action="store_true", help=help)


def add_device(p: argparse.ArgumentParser, help: str | None = DEVICE_HELP) -> None:
    p.add_argument("--device", default=None, help=help)


def add_backend(p: argparse.ArgumentParser, default: str | None = "auto", help: str | None = BACKEND_HELP) -> None:
    p.add_argument("--backend", choices=BACKENDS, default=default, help=help)


def add_precision(p: argparse.ArgumentParser, default: str | None = "fp32", help: str | None = None) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default=default, help=help)


def add_calibrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibrate", type=Path, nargs="+", default=None, metavar="MEDIA",
                   help="videos or images whose face crops calibrate int8")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Which model, from which weights, on which device: scan, eval and explain."""
    add_model(p)
    add_weights_dir(p)
    add_weights(p)
    add_offline(p)
    add_device(p)


def add_backend_args(p: argparse.ArgumentParser, default_backend: str = "auto") -> None:
    """Where the engine runs and how it is converted: scan and engines build."""
    add_backend(p, default_backend)
    add_precision(p)
    add_calibrate(p)
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where converted engines are cached (default: $DFSTREAM_CACHE or ~/.cache/dfstream/engines)")


# -- engines -------------------------------------------------------------------------------------------------

def device(args: argparse.Namespace) -> str:
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def engine_options(args: argparse.Namespace) -> Any:
    """The engine options parsed into `args`, as `stream.live.assembly.EngineOptions`."""
    from stream.live.assembly import EngineOptions

    return EngineOptions(weights_dir=args.weights_dir, device=device(args), offline=args.offline,
                         backend=args.backend, precision=args.precision, cache_dir=getattr(args, "cache_dir", None),
                         int8_crops=int8_crops(getattr(args, "calibrate", None)), progress=True)


@dataclass(frozen=True)
class MediaCrops:
    """int8 calibration crops cut from the user's media (`--calibrate`) at an engine's size and margin, when an
    engine is prepared (`stream.live.assembly.EngineOptions.int8_crops`)."""

    media: tuple[Path, ...]

    def __call__(self, spec: Any) -> Any:
        from stream.jobs.calibration import calibration_crops

        return calibration_crops(list(self.media), spec.size, spec.margin)


def int8_crops(media: list[Path] | None) -> MediaCrops | None:
    return MediaCrops(tuple(media)) if media else None


def prepared(name: str, args: argparse.Namespace, weights_file: Path | None) -> Any:
    """One engine, prepared with the engine options parsed into `args`."""
    from stream.live.assembly import prepare_engine

    return prepare_engine(name, engine_options(args), weights_file)


def add_calibration(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", type=Path, action="append", default=None, metavar="FILE",
                   help="a calibration map (dfstream calibrate) for a model, or a fitted ensemble; repeatable. "
                        "Without it, WEIGHTS.calibration.json beside a model's weights is used if present")


def load_models(args: argparse.Namespace) -> tuple[list[Any], list[float], Any]:
    """The `--model` engines with their calibrations, their thresholds, and the ensemble if one was named."""
    from stream.live.assembly import assemble

    built = assemble(args.models, engine_options(args), getattr(args, "calibration", None), args.weights)
    warn_auto(built.auto)
    return built.engines, built.thresholds, built.ensemble


def warn_auto(choice: Any) -> None:
    """Say on the console (stderr: stdout may be JSON) when `--model auto` fell back to a weaker model."""
    if choice is not None and choice.warning:
        print(f"dfstream: WARNING: {choice.warning}", file=sys.stderr, flush=True)


def face_detector(args: argparse.Namespace) -> Any:
    """MTCNN on the chosen device, or None when `--faces none` scores whole frames."""
    if args.faces != "mtcnn":
        return None
    from stream.live.faces import DetectorConfig, FaceDetector

    return FaceDetector(DetectorConfig(device=device(args)))


# -- output --------------------------------------------------------------------------------------------------

def print_table(table: Any) -> None:
    """Print a rich table; piped output (logs, CI) has no terminal width, so keep whole paths on one line there."""
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else PIPED_TABLE_WIDTH).print(table)
