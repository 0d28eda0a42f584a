"""Engine assembly: registry names -> engines on their backend and precision, with their score calibrations and
the fitted ensemble. One place for every command (`serve`, `scan`, `eval`, `calibrate`, `explain`, `engines
build`) and for the cluster's node workers, so a node prepares its engines exactly as `serve` does.

Where int8 calibration crops come from is the caller's business (`EngineOptions.int8_crops`): the command line cuts
them from the user's media with the offline jobs, which live code never imports. Importing this module loads
nothing heavy (every parser reads `ENSEMBLE_PREFIX`); torch and the engines load when something is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.auto import AutoChoice
    from engines.base import Engine
    from engines.voice_base import VoiceEngine
    from engines.calibration import Ensemble
    from stream.config.serve import ServeConfig

ENSEMBLE_PREFIX = "ensemble:"  # --model ensemble:a,b,c names a stacked ensemble of registry models
ENSEMBLE_THRESHOLD = 0.5  # a fitted ensemble is calibrated: p(fake) >= 0.5 is fake

CropsFor = Callable[[Any], Any]  # an engine's InputSpec -> uint8 face crops (N, size, size, 3) at its size and margin


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Where engines' weights come from and where they run. `int8_crops` gives the face crops int8 calibrates on
    (required for `precision: int8`); `cache_dir` holds converted engines (default: engines.backends')."""

    weights_dir: Path | None = None
    device: str = "cpu"
    offline: bool = False
    backend: str = "auto"
    precision: str = "fp32"
    cache_dir: Path | None = None
    int8_crops: CropsFor | None = None
    progress: bool = False  # show a download's progress bar (a command on a terminal; never a node worker)


@dataclass(frozen=True, slots=True)
class Assembly:
    """The engines of one `--model` list, the ensemble when one was named, the threshold each is judged at, and
    what `--model auto` decided (None when models were named)."""

    engines: list[Engine]
    ensemble: Ensemble | None
    thresholds: list[float]
    auto: AutoChoice | None = None


def prepare_engine(name: str, options: EngineOptions, weights_file: Path | None = None) -> Engine:
    """Build `name` from its weights (or `weights_file`, unverified) and move it onto the backend at the
    precision (int8 calibrated on `options.int8_crops` at the engine's own crop size)."""
    from engines.backends import prepare
    from engines.registry import build_engine

    engine = build_engine(name, weights_dir=options.weights_dir, weights_file=weights_file, device=options.device,
                          allow_download=not options.offline)
    calibration = None
    if options.precision == "int8" and options.int8_crops is not None:
        calibration = options.int8_crops(engine.spec)
    return prepare(engine, options.backend, options.precision, calibration, options.cache_dir)


def expand_models(names: Sequence[str]) -> tuple[list[str], str | None]:
    """Registry names to build, and the ensemble's name when one `ensemble:a,b,...` was asked for."""
    names = list(names)
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


def attach_calibrations(engines: Sequence[Engine], files: Sequence[Path] | None,
                        ensemble_name: str | None = None) -> Ensemble | None:
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
        if engine.calibration is None and engine.weights_path is not None:
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


def assemble(models: Sequence[str] | None, options: EngineOptions, calibrations: Sequence[Path] | None = None,
             weights_file: Path | None = None) -> Assembly:
    """The `--model` engines (default: `auto`, engines.auto), prepared, with their calibrations, the ensemble if
    one was named, and their registry thresholds (the ensemble's own when there is one)."""
    from engines.auto import AUTO, resolve
    from engines.registry import get_entry

    names, ensemble_name = expand_models(models or [AUTO])
    choice = None
    if AUTO in names:
        if len(names) != 1:
            raise ValueError("--model auto picks one model by itself: give it alone, or name the models")
        if weights_file:
            raise ValueError("--weights loads a file for a named model: give --model NAME, not auto")
        choice = resolve(options.device, options.weights_dir, options.offline, options.progress)
        names = [choice.picked]
    if weights_file and len(names) != 1:
        raise ValueError("--weights needs exactly one --model")
    engines = [prepare_engine(n, options, weights_file) for n in names]
    ensemble = attach_calibrations(engines, calibrations, ensemble_name)
    thresholds = [ENSEMBLE_THRESHOLD] if ensemble is not None else [get_entry(n).threshold for n in names]
    return Assembly(engines, ensemble, thresholds, choice)


def serve_engines(config: ServeConfig, device: str, offline: bool = False,
                  int8_crops: CropsFor | None = None, progress: bool = False) -> Assembly:
    """A serve config's models on its backend and precision, with its calibrations: what `serve` and every node
    worker of a cluster run (`auto` resolved on each, for its own device)."""
    options = EngineOptions(weights_dir=config.weights_dir, device=device, offline=offline, backend=config.backend,
                            precision=config.precision, int8_crops=int8_crops, progress=progress)
    return assemble(list(config.models), options, list(config.calibration))


def check_voice_models(names: Sequence[str]) -> None:
    """Refuse a name in `voice.models` that is not a voice model, before anything is built."""
    from engines.registry import MODELS
    from engines.voices import UnknownModel, is_voice_model

    for name in names:
        if name in MODELS:
            raise ValueError(f"{name!r} is a face model: give it in models (--model), not voice.models (--voice-model)")
        if not is_voice_model(name):
            raise UnknownModel(name)


def serve_voice_engines(config: ServeConfig, device: str, offline: bool = False) -> list[VoiceEngine]:
    """A serve config's voice models (`voice.models`), with their calibrations (`voice.calibration`, else a file
    beside their weights): the live voice path's engines. Empty when no voice model is named."""
    from engines.voices import build_voice_engine

    check_voice_models(config.voice.models)
    engines = [build_voice_engine(n, weights_dir=config.weights_dir, device=device, allow_download=not offline)
               for n in config.voice.models]
    attach_calibrations(engines, list(config.voice.calibration))  # type: ignore[arg-type]
    return engines
