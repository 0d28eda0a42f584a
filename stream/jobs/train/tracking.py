"""Experiment tracking: MLflow when it is installed and `--mlflow` is given (parameters, per-epoch metrics,
the weights and metrics.json as artifacts), otherwise nothing. MLflow is an optional extra
(`pip install 'dfstream[mlflow]'`); training never depends on it."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

MLFLOW_MISSING = ("--mlflow: MLflow is not installed (pip install 'dfstream[mlflow]'); "
                  "training continues without tracking")
MAX_PARAM_CHARS = 500  # MLflow's oldest servers cap a parameter value at 500 characters


class Tracker:
    """No tracking: every call is a no-op. Subclassed by the MLflow tracker."""

    active = False

    def params(self, params: Mapping[str, Any]) -> None: ...
    def metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...
    def artifact(self, path: Path) -> None: ...
    def close(self, failed: bool = False) -> None: ...

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self.close(failed=exc_type is not None)


class MlflowTracker(Tracker):
    active = True

    def __init__(self, mlflow: Any, experiment: str, run_name: str) -> None:
        self._mlflow = mlflow
        mlflow.set_experiment(experiment)
        self._run = mlflow.start_run(run_name=run_name)

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
