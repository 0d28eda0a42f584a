"""Calibrated scores: a monotone map from an engine's raw p(fake) to a probability that matches how often faces
scored like that are really fake, and the stacked ensemble that fuses several calibrated engines.

Why: a raw detector score is not a probability. MesoNet calls half the real faces of a new dataset 0.6, so a
threshold of 0.7 means something different for every model and camera. A map fitted on labelled data (Platt's
sigmoid or isotonic regression, `dfstream calibrate`) makes 0.7 mean "7 in 10 such faces were fake there".

Files are JSON (never pickle), tied to the weights they were fitted for by sha256: a map fitted for other
weights is refused, because it would silently mean nothing. Fitting lives in `stream.jobs.calibrate`; this
module only reads, checks and applies, with numpy, so the live path carries no scikit-learn.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CALIBRATION_FORMAT = "dfstream-calibration"
ENSEMBLE_FORMAT = "dfstream-ensemble"
FORMAT_VERSION = 1
SUFFIX = ".calibration.json"  # found beside the weights: Meso4_DF.h5.calibration.json
EPS = 1e-6  # p(fake) is clipped to [EPS, 1 - EPS] before a logit


class CalibrationError(ValueError):
    """A calibration file is unreadable, malformed, or for other weights; the message names the file and why."""


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class Platt(BaseModel):
    """p = sigmoid(a * logit(raw) + b): two numbers, smooth, hard to overfit; the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    a: float
    b: float


class Isotonic(BaseModel):
    """A non-decreasing step map through (x, y) knots, interpolated: fits any monotone shape, needs more data."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    x: list[float] = Field(min_length=2)
    y: list[float] = Field(min_length=2)

    @model_validator(mode="after")
    def _monotone(self) -> Isotonic:
        if len(self.x) != len(self.y):
            raise ValueError("x and y must have the same length")
        if any(b < a for a, b in zip(self.x, self.x[1:])) or any(b < a for a, b in zip(self.y, self.y[1:])):
            raise ValueError("the isotonic knots must be non-decreasing")
        if not all(0.0 <= v <= 1.0 for v in self.x + self.y):
            raise ValueError("isotonic knots must lie in [0, 1]")
        return self


class Calibration(BaseModel):
    """One engine's calibration map, for the weights whose sha256 it names."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["dfstream-calibration"] = CALIBRATION_FORMAT
    version: Literal[1] = FORMAT_VERSION
    model: str
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    method: Literal["platt", "isotonic"]
    platt: Platt | None = None
    isotonic: Isotonic | None = None
    fitted_on: dict = {}

    @model_validator(mode="after")
    def _has_its_map(self) -> Calibration:
        if getattr(self, self.method) is None:
            raise ValueError(f"method is {self.method!r} but the file has no {self.method!r} map")
        return self

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated p(fake), float32, same shape as `raw`."""
        if self.method == "platt":
            assert self.platt is not None
            out = sigmoid(self.platt.a * logit(raw) + self.platt.b)
        else:
            assert self.isotonic is not None
            out = np.interp(np.asarray(raw, dtype=np.float64), self.isotonic.x, self.isotonic.y)
        return out.astype(np.float32)


class Ensemble(BaseModel):
    """Several engines fused by stacking: p = sigmoid(intercept + sum_i coef_i * logit(calibrated p_i)).

    The coefficients come from a logistic regression fitted on a labelled set (`dfstream calibrate --model
    ensemble:a,b,...`), never set by hand, so a member that carries no information gets a weight near zero. A
    member that did not score a face (a clip not yet full, a face below its quality floor) is left out of the
    sum, which is the same as it saying 0.5."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["dfstream-ensemble"] = ENSEMBLE_FORMAT
    version: Literal[1] = FORMAT_VERSION
    name: str
    members: list[Calibration] = Field(min_length=2)
    coef: dict[str, float]
    intercept: float
    influence: dict[str, float] = {}  # per member: the fused logit's change per standard deviation of its own
    fitted_on: dict = {}

    @model_validator(mode="after")
    def _coef_per_member(self) -> Ensemble:
        names = [m.model for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"members repeat: {names}")
        if set(self.coef) != set(names):
            raise ValueError(f"coef names {sorted(self.coef)} do not match the members {sorted(names)}")
        return self

    @property
    def member_names(self) -> list[str]:
        return [m.model for m in self.members]

    def fuse(self, scores: Mapping[str, float]) -> float | None:
        """The stacked p(fake) of the members' calibrated scores that are present; None when none is."""
        known = {n: s for n, s in scores.items() if n in self.coef}
        if not known:
            return None
        z = self.intercept + sum(self.coef[n] * float(logit(np.array(s))) for n, s in known.items())
        return float(sigmoid(z))


def read_json(path: Path, what: str = "calibration") -> dict:
    """A JSON object from a `what` file (calibration, baseline); CalibrationError for anything else."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{path}: not a readable JSON {what} file ({exc})") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"{path}: a {what} file is a JSON object")
    return data


def read_file(path: Path) -> Calibration | Ensemble:
    """A calibration or ensemble file, validated; CalibrationError says what is wrong with it."""
    data = read_json(path)
    kind = data.get("format")
    model = {CALIBRATION_FORMAT: Calibration, ENSEMBLE_FORMAT: Ensemble}.get(kind)
    if model is None:
        raise CalibrationError(f"{path}: unknown format {kind!r} (expected {CALIBRATION_FORMAT!r} or "
                               f"{ENSEMBLE_FORMAT!r})")
    return validated(model, data, path, "calibration", CalibrationError)


def validated(model: type, data: dict, path: Path | str, what: str, error: type[Exception]):
    """`model` read from a JSON file's `data`, or `error` naming the file and the first field that is wrong (the one
    refusal wording for calibration, ensemble and baseline files)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "file"
        raise error(f"{path}: malformed {what} ({where}: {first['msg']})") from None


def check_weights(cal: Calibration, path: Path, model: str, weights_sha256: str,
                  remedy: str = "refit it with dfstream calibrate") -> None:
    """Refuse a map (or any record with `model` and `weights_sha256`: a baseline's engines) fitted for another
    model or other weights; `remedy` says how to get a right one."""
    if cal.model != model:
        raise CalibrationError(f"{path}: fitted for model {cal.model!r}, not {model!r}")
    if cal.weights_sha256 != weights_sha256:
        raise CalibrationError(f"{path}: fitted for other weights of {model} (sha256 {cal.weights_sha256[:12]}…, "
                               f"these are {weights_sha256[:12]}…); {remedy}")


def write_file(item: BaseModel, path: Path) -> Path:
    """Write atomically (temp file + rename), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(item.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def beside(weights_path: Path) -> Path:
    """Where a calibration for a weights file is looked for when none is given."""
    return Path(str(weights_path) + SUFFIX)


def calibration_of(engine: object) -> Calibration | None:
    """The map attached to an engine (by `attach`), or None."""
    return getattr(engine, "calibration", None)


def attach(engine: object, cal: Calibration | None) -> None:
    """Give an engine its calibration: the scoring core applies it to every prediction."""
    engine.calibration = cal  # a declared attribute of engines.base.Engine
