"""Experiment tracking for `train` and `eval`.

- MLflow, when it is installed and `--mlflow` is given: parameters, per-epoch metrics, the weights and metrics.json
  as artifacts, to the store MLflow's own settings name (MLFLOW_TRACKING_URI). MLflow is an optional extra
  (`pip install 'dfstream[mlflow]'`); training never depends on it.
- CodeCarbon, with `--track-emissions`: its offline tracker (no network, no API) measures the job's energy and
  turns it into kg CO2eq with the grid of `--emissions-country`; the result goes to metrics.json under
  "emissions", to `emissions.csv` in the output folder, and to MLflow with `--mlflow`. CodeCarbon is the optional
  extra `emissions`; asking for emissions without it is a usage error (exit 2).

Nothing heavy is imported at the top: the CLI imports this module to build its parser.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

MLFLOW_MISSING = ("--mlflow: MLflow is not installed (pip install 'dfstream[mlflow]'); "
                  "training continues without tracking")
MAX_PARAM_CHARS = 500  # MLflow's oldest servers cap a parameter value at 500 characters

CODECARBON_MISSING = ("--track-emissions needs the 'codecarbon' package, which is not installed "
                      "(pip install 'dfstream[emissions]', or pip install codecarbon)")
# Offline, CodeCarbon cannot locate the machine: the grid's carbon intensity comes from this ISO 3166-1 alpha-3
# code. Spain by default (card 000's team); pass the country the machine's electricity comes from.
DEFAULT_EMISSIONS_COUNTRY = "ESP"
EMISSIONS_CSV = "emissions.csv"


class TrackingError(ValueError):
    """Tracking was asked for and cannot run as asked; the CLI reports it in one line and exits 2."""


class Tracker:
    """No tracking: every call is a no-op. Subclassed by the MLflow tracker."""

    active = False

    def params(self, params: Mapping[str, Any]) -> None: ...
    def metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...
    def artifact(self, path: Path) -> None: ...
    def close(self, failed: bool = False) -> None: ...

    def info(self) -> dict[str, str] | None:
        """Where the run went (store, experiment, run id), for metrics.json; None without tracking."""
        return None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self.close(failed=exc_type is not None)


class MlflowTracker(Tracker):
    active = True

    def __init__(self, mlflow: Any, experiment: str, run_name: str) -> None:
        from mlflow.exceptions import MlflowException

        self._mlflow = mlflow
        try:
            mlflow.set_experiment(experiment)
            self._run = mlflow.start_run(run_name=run_name)
        except MlflowException as exc:  # a store MLflow refuses: say so before any training
            raise TrackingError(f"--mlflow: cannot use the tracking store {mlflow.get_tracking_uri()!r}: "
                                f"{exc.message}") from exc

    def info(self) -> dict[str, str] | None:
        return {"tracking_uri": self._mlflow.get_tracking_uri(), "experiment_id": self._run.info.experiment_id,
                "run_id": self._run.info.run_id}

    def params(self, params: Mapping[str, Any]) -> None:
        self._mlflow.log_params({k: _param(v) for k, v in flatten(params).items()})

    def metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        numbers = {k: float(v) for k, v in flatten(metrics).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            self._mlflow.log_metrics(numbers, step=step)

    def artifact(self, path: Path) -> None:
        if path.is_dir():
            self._mlflow.log_artifacts(str(path), artifact_path=path.name)
        elif path.is_file():
            self._mlflow.log_artifact(str(path))

    def close(self, failed: bool = False) -> None:
        self._mlflow.end_run(status="FAILED" if failed else "FINISHED")


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_CHARS]


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"val": {"auc": 0.9}} -> {"val.auc": 0.9}: MLflow keys are flat."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def open_tracker(enabled: bool, experiment: str, run_name: str, warn: Callable[[str], None]) -> Tracker:
    if not enabled:
        return Tracker()
    try:
        import mlflow
    except ImportError:
        warn(MLFLOW_MISSING)
        return Tracker()
    return MlflowTracker(mlflow, experiment, run_name)


# ---------------------------------------------------------------- emissions (CodeCarbon)


def add_emissions_arguments(group: Any) -> None:
    """`--track-emissions` and `--emissions-country`, shared by `train` and `eval`."""
    group.add_argument("--track-emissions", action="store_true",
                       help="measure energy and CO2eq with CodeCarbon's offline tracker (needs the 'emissions' "
                            "extra): metrics.json's \"emissions\", OUT/emissions.csv, and MLflow with --mlflow")
    group.add_argument("--emissions-country", default=DEFAULT_EMISSIONS_COUNTRY, metavar="ISO3",
                       help="country whose grid turns energy into CO2eq, as an ISO 3166-1 alpha-3 code "
                            f"(default {DEFAULT_EMISSIONS_COUNTRY})")


def require_codecarbon() -> None:
    """Fail now, before any work, when `--track-emissions` cannot be honoured."""
    try:
        import codecarbon  # noqa: F401
    except ImportError as exc:
        raise TrackingError(CODECARBON_MISSING) from exc


class EmissionsMeter:
    """CodeCarbon's `OfflineEmissionsTracker` around one job, or nothing when disabled.

    `stop()` returns the "emissions" block of metrics.json (None when disabled); leaving the `with` block stops
    the tracker too, so a failed job never leaves its sampling thread behind."""

    def __init__(self, enabled: bool, out: Path, country: str, project: str) -> None:
        self.enabled = enabled
        self._tracker: Any = None
        self._out, self._project = Path(out), project
        self.country = country.strip().upper()
        self.result: dict[str, Any] | None = None
        if enabled:
            require_codecarbon()
            self._check_country()

    def _check_country(self) -> None:
        try:
            from codecarbon.input import DataSource

            known = DataSource().get_global_energy_mix_data()
        except Exception:  # the table moved in another CodeCarbon version: let the tracker judge the code
            return
        if self.country not in known:
            raise TrackingError(f"--emissions-country {self.country!r} is not in CodeCarbon's energy-mix table; "
                                "give an ISO 3166-1 alpha-3 code such as ESP, FRA, DEU, USA or CAN")

    def __enter__(self) -> EmissionsMeter:
        if self.enabled:
            import logging

            from codecarbon import OfflineEmissionsTracker

            # Its start-up chatter (hardware guesses, "multiple instances") goes before log_level applies.
            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self._out.mkdir(parents=True, exist_ok=True)
            self._tracker = OfflineEmissionsTracker(
                country_iso_code=self.country, output_dir=str(self._out), output_file=EMISSIONS_CSV,
                project_name=self._project, log_level="error")  # CSV output is the default
            self._tracker.start()
        return self

    def stop(self) -> dict[str, Any] | None:
        if self._tracker is None:
            return self.result
        tracker, self._tracker = self._tracker, None
        emissions_kg = tracker.stop()
        data = tracker.final_emissions_data
        self.result = {
            "co2eq_kg": float(emissions_kg if emissions_kg is not None else data.emissions),
            "energy_kwh": float(data.energy_consumed),
            "duration_s": float(data.duration),
            "cpu_energy_kwh": float(data.cpu_energy),
            "gpu_energy_kwh": float(data.gpu_energy),
            "ram_energy_kwh": float(data.ram_energy),
            "cpu_power_w": float(data.cpu_power),
            "gpu_power_w": float(data.gpu_power),
            "ram_power_w": float(data.ram_power),
            "country_iso_code": data.country_iso_code,
            "country_name": data.country_name,
            "tracker": "codecarbon.OfflineEmissionsTracker",
            "tracking_mode": data.tracking_mode,
            # how each part was measured, e.g. "CPU(Intel Rapl)" or "CPU(Cpu Load)" (an estimate from TDP and load)
            "method": [str(h) for h in getattr(tracker, "_hardware", [])],
            "codecarbon_version": data.codecarbon_version,
            "file": str(self._out / EMISSIONS_CSV),
        }
        return self.result

    def __exit__(self, *exc: object) -> None:
        if self._tracker is not None:
            try:
                self.stop()
            except Exception:  # already failing: the job's own error is the one to report
                if exc[0] is None:
                    raise


def log_emissions(tracker: Tracker, emissions: Mapping[str, Any] | None) -> None:
    """The numbers as MLflow metrics ("emissions.co2eq_kg", ...), the rest as parameters, the CSV as an
    artifact."""
    if not emissions or not tracker.active:
        return
    tracker.metrics({"emissions": emissions})
    tracker.params({f"emissions.{k}": v for k, v in emissions.items()
                    if k in ("country_iso_code", "tracker", "tracking_mode", "method", "codecarbon_version")})
    tracker.artifact(Path(emissions["file"]))
