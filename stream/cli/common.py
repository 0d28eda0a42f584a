"""What several commands share: exit codes, the engine options (weights, backend, precision, device, offline,
model), building engines from them, the torch device and the rich tables.

Every parser is built on every `dfstream` call, so this module imports nothing heavy: torch, engines and rich
are imported by the helpers that need them, when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engines.choices import BACKENDS, PRECISIONS

EXIT_OK = 0
EXIT_INPUT_FAILED = 1  # some input could not be scanned; the others were
EXIT_USAGE = 2  # bad arguments, unknown model, weights unavailable
PIPED_TABLE_WIDTH = 200


BACKEND_HELP = "auto: TensorRT, then CUDA torch, then ONNX Runtime on the CPU"
MODEL_HELP = "model to run (repeatable; several are fused by mean p_fake). Default: meso4-f2f"
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


def prepare_engine(name: str, *, weights_dir: Path | None, weights_file: Path | None, device: str, offline: bool,
                   backend: str, precision: str, calibrate: list[Path] | None, cache_dir: Path | None) -> Any:
    """Build `name` from its weights and move it onto `backend` at `precision` (int8 calibrated on `calibrate`)."""
    from engines.backends import prepare
    from engines.registry import build_engine

    engine = build_engine(name, weights_dir=weights_dir, weights_file=weights_file, device=device,
                          allow_download=not offline)
    calibration = None
    if precision == "int8" and calibrate:
        from stream.jobs.calibration import calibration_crops

        calibration = calibration_crops(calibrate, engine.spec.size, engine.spec.margin)
    return prepare(engine, backend, precision, calibration, cache_dir)


def prepared(name: str, args: argparse.Namespace, weights_file: Path | None) -> Any:
    """`prepare_engine` with the settings of the engine options parsed into `args`."""
    return prepare_engine(name, weights_dir=args.weights_dir, weights_file=weights_file, device=device(args),
                          offline=args.offline, backend=args.backend, precision=args.precision,
                          calibrate=args.calibrate, cache_dir=args.cache_dir)


def load_engines(args: argparse.Namespace) -> tuple[list[Any], list[float]]:
    """The `--model` engines (default meso4-f2f) and their registry thresholds."""
    from engines.registry import DEFAULT_MODEL, get_entry

    names = args.models or [DEFAULT_MODEL]
    if args.weights and len(names) != 1:
        raise ValueError("--weights needs exactly one --model")
    entries = [get_entry(n) for n in names]
    engines = [prepared(n, args, args.weights) for n in names]
    return engines, [e.threshold for e in entries]


ENSEMBLE_PREFIX = "ensemble:"  # --model ensemble:a,b,c names a stacked ensemble of registry models


def add_calibration(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", type=Path, action="append", default=None, metavar="FILE",
                   help="a calibration map (dfstream calibrate) for a model, or a fitted ensemble; repeatable. "
                        "Without it, WEIGHTS.calibration.json beside a model's weights is used if present")


def expand_models(names: list[str]) -> tuple[list[str], str | None]:
    """Registry names to build, and the ensemble's name when one `ensemble:a,b,...` was asked for."""
    ensembles = [n for n in names if n.startswith(ENSEMBLE_PREFIX)]
    if not ensembles:
        return names, None
    if len(names) != 1:
        raise ValueError("an ensemble is a model of its own: give it as the only --model")
    members = [m.strip() for m in names[0].removeprefix(ENSEMBLE_PREFIX).split(",") if m.strip()]
    if len(members) < 2 or len(set(members)) != len(members):
        raise ValueError(f"{names[0]}: an ensemble needs two or more different models, e.g. "
                         "ensemble:meso4-df,meso4-f2f")
    return members, ENSEMBLE_PREFIX + ",".join(members)


def attach_calibrations(engines: list[Any], files: list[Path] | None, ensemble_name: str | None = None) -> Any:
    """Give each engine its calibration map: from `files` (checked against the engine's weights), else the file
    beside its weights. Returns the fitted ensemble when `ensemble_name` is asked for (its file is required)."""
    from engines.calibration import Calibration, CalibrationError, Ensemble, attach, beside, check_weights, read_file

    by_name = {e.name: e for e in engines}
    ensemble = None
    for path in files or []:
        item = read_file(path)
        cals = item.members if isinstance(item, Ensemble) else [item]
        if isinstance(item, Ensemble):
            if ensemble_name is None or set(item.member_names) != set(by_name):
                raise CalibrationError(f"{path}: an ensemble of {item.member_names}; run it with "
                                       f"--model {ENSEMBLE_PREFIX}{','.join(item.member_names)}")
            ensemble = item
        for cal in cals:
            if cal.model not in by_name:
                raise CalibrationError(f"{path}: fitted for {cal.model}, which is not among the models "
                                       f"{sorted(by_name)}")
            engine = by_name[cal.model]
            check_weights(cal, path, engine.name, engine.weights_sha256)
            attach(engine, cal)
    for engine in engines:
        if getattr(engine, "calibration", None) is None and getattr(engine, "weights_path", None) is not None:
            found = beside(engine.weights_path)
            if found.is_file():
                cal = read_file(found)
                if not isinstance(cal, Calibration):
                    raise CalibrationError(f"{found}: expected a single model's calibration")
                check_weights(cal, found, engine.name, engine.weights_sha256)
                attach(engine, cal)
    if ensemble_name is not None and ensemble is None:
        raise CalibrationError(f"{ensemble_name}: its stacking weights are fitted, never set by hand: fit them with "
                               f"dfstream calibrate --model {ensemble_name} DATASET --out FILE, then pass "
                               "--calibration FILE")
    return ensemble


def load_models(args: argparse.Namespace) -> tuple[list[Any], list[float], Any]:
    """The `--model` engines with their calibrations, their thresholds, and the ensemble if one was named."""
    from engines.registry import DEFAULT_MODEL, get_entry

    names, ensemble_name = expand_models(args.models or [DEFAULT_MODEL])
    if args.weights and len(names) != 1:
        raise ValueError("--weights needs exactly one --model")
    engines = [prepared(n, args, args.weights) for n in names]
    ensemble = attach_calibrations(engines, getattr(args, "calibration", None), ensemble_name)
    thresholds = [0.5] if ensemble is not None else [get_entry(n).threshold for n in names]
    return engines, thresholds, ensemble


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
