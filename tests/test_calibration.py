"""Score calibration and the stacked ensemble: fit -> save -> load round trips, refusals of malformed files and of
files for other weights (nothing attached), fitted (never hand-set) stacking weights, and the real commands
(`calibrate`, `eval --calibration`, `scan` with an ensemble) on shared face crops with the real MesoNet files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engines.calibration import (Calibration, CalibrationError, Ensemble, Platt, beside, check_weights,
                                 read_file, write_file)
from stream.cli import main
from stream.live.assembly import attach_calibrations, expand_models
from stream.jobs.calibrate import CalibrationFitError, ece, fit_ensemble, fit_map, Faces

from support.shared import MESONET_WEIGHTS, SHARED

SHA = "a" * 64
OTHER_SHA = "b" * 64
DFDC = SHARED / "data" / "faces" / "dfdc-crops"


def _overconfident(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and raw scores of a detector that separates the classes but says 0.95 where 0.7 would be true."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.2, n)
    return y, 1 / (1 + np.exp(-3.0 * z))


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_fit_save_load_round_trip_improves_calibration(tmp_path, method):
    y, raw = _overconfident()
    cal = fit_map(raw, y, method, "meso4-df", SHA, {"dataset": "synthetic"})
    path = write_file(cal, tmp_path / "m.calibration.json")
    back = read_file(path)
    assert back == cal and isinstance(back, Calibration)
    np.testing.assert_array_equal(back.apply(raw), cal.apply(raw))
    order = np.argsort(raw)
    assert np.all(np.diff(back.apply(raw)[order]) >= -1e-6)  # monotone: the ranking (AUC) is kept
    assert ece(back.apply(raw), y) < 0.5 * ece(raw, y)
    assert back.fitted_on["faces"] == len(y) and json.loads(path.read_text())["format"] == "dfstream-calibration"


@pytest.mark.parametrize("content, says", [
    ("not json", "not a readable JSON"),
    ("[1, 2]", "a JSON object"),
    (json.dumps({"format": "pickle"}), "unknown format"),
    (json.dumps({"format": "dfstream-calibration", "version": 1, "model": "m", "weights_sha256": SHA,
                 "method": "platt"}), "no 'platt' map"),
    (json.dumps({"format": "dfstream-calibration", "version": 1, "model": "m", "weights_sha256": SHA,
                 "method": "isotonic", "isotonic": {"x": [0.0, 0.5, 1.0], "y": [0.2, 0.1, 0.9]}}), "non-decreasing"),
    (json.dumps({"format": "dfstream-calibration", "version": 1, "model": "m", "weights_sha256": "short",
                 "method": "platt", "platt": {"a": 1, "b": 0}}), "weights_sha256"),
], ids=["garbage", "not-object", "format", "missing-map", "not-monotone", "bad-sha"])
def test_malformed_files_are_refused_with_the_reason(tmp_path, content, says):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CalibrationError, match=says) as err:
        read_file(path)
    assert str(path) in str(err.value)


class _Built:
    """What attach_calibrations sees of a built engine: its name and its weights' hash."""

    def __init__(self, name: str, sha: str = SHA, weights_path: Path | None = None) -> None:
        self.name, self.weights_sha256, self.weights_path = name, sha, weights_path
        self.calibration = None


def test_a_file_for_other_weights_is_refused_and_nothing_is_attached(tmp_path):
    path = write_file(Calibration(model="meso4-df", weights_sha256=OTHER_SHA, method="platt",
                                  platt=Platt(a=1, b=0)), tmp_path / "c.json")
    engine = _Built("meso4-df")
    with pytest.raises(CalibrationError, match="fitted for other weights of meso4-df"):
        attach_calibrations([engine], [path])
    assert engine.calibration is None
    with pytest.raises(CalibrationError, match="fitted for model 'meso4-df', not 'meso4-f2f'"):
        check_weights(read_file(path), path, "meso4-f2f", OTHER_SHA)
    other = _Built("meso4-f2f", OTHER_SHA)
    with pytest.raises(CalibrationError, match="not among the models"):
        attach_calibrations([other], [path])
    assert other.calibration is None


def test_the_file_beside_the_weights_is_found(tmp_path):
    weights = tmp_path / "Meso4_DF.h5"
    weights.write_bytes(b"w")
    write_file(Calibration(model="meso4-df", weights_sha256=SHA, method="platt", platt=Platt(a=0.5, b=-1)),
               beside(weights))
    engine = _Built("meso4-df", weights_path=weights)
    attach_calibrations([engine], None)
    assert engine.calibration is not None and engine.calibration.platt == Platt(a=0.5, b=-1)


def test_ensemble_weights_are_fitted_and_a_noise_member_gets_almost_none():
    y, good = _overconfident(600)
    noise = np.random.default_rng(1).uniform(0.01, 0.99, len(y))
    faces = Faces(labels=y, scores={"good": good, "noise": noise})
    ens = fit_ensemble("ensemble:good,noise", faces, {"good": SHA, "noise": OTHER_SHA}, "platt", {})
    assert abs(ens.influence["noise"]) < 0.1 * abs(ens.influence["good"]) and ens.influence["good"] > 0.5
    assert ens.fuse({"good": 0.99, "noise": 0.01}) > 0.8 > 0.2 > ens.fuse({"good": 0.01, "noise": 0.99})
    assert ens.fuse({"good": 0.9}) == pytest.approx(ens.fuse({"good": 0.9, "noise": 0.5}), abs=1e-9)  # missing = 0.5
    with pytest.raises(CalibrationFitError, match="needs at least 2 real and 2 fake"):
        fit_map(good[:3], np.array([1, 1, 1]), "platt", "good", SHA)


def test_an_ensemble_without_its_fitted_file_is_refused():
    names, ensemble = expand_models(["ensemble:meso4-df,meso4-f2f"])
    assert names == ["meso4-df", "meso4-f2f"] and ensemble == "ensemble:meso4-df,meso4-f2f"
    with pytest.raises(CalibrationError, match="fitted, never set by hand"):
        attach_calibrations([_Built("meso4-df"), _Built("meso4-f2f")], None, ensemble)
    with pytest.raises(ValueError, match="two or more different models"):
        expand_models(["ensemble:meso4-df"])


@pytest.fixture(scope="module")
def dfdc(tmp_path_factory) -> Path:
    """The shared DFDC crops as a labelled dataset (real/ and fake/), linked, never copied."""
    root = tmp_path_factory.mktemp("dfdc")
    for label in ("real", "fake"):
        (root / label).mkdir()
        for image in sorted((DFDC / label).iterdir()):
            (root / label / image.name).symlink_to(image)
    return root


@pytest.mark.slow
def test_calibrate_then_eval_and_scan_with_the_files(dfdc, tmp_path, capsys):
    common = ["--weights-dir", str(MESONET_WEIGHTS), "--offline", "--faces", "none",
              "--cache-dir", str(tmp_path / "cache")]
    from PIL import Image

    from engines.registry import get_entry

    out = tmp_path / "meso4-f2f.json"
    assert main(["calibrate", str(dfdc), "--model", "meso4-f2f", "--out", str(out), *common]) == 0
    assert "expected calibration error" in capsys.readouterr().out
    cal = read_file(out)
    floor = get_entry("meso4-f2f").quality.min_face_px
    judged = sum(min(Image.open(f).size) >= floor for f in DFDC.glob("*/*"))  # the quality gate applies here too
    assert isinstance(cal, Calibration) and cal.model == "meso4-f2f" and cal.fitted_on["faces"] == judged
    ens_file = tmp_path / "ens.json"
    assert main(["calibrate", str(dfdc), "--model", "ensemble:meso4-f2f,mesoinception-f2f", "--out", str(ens_file),
                 *common]) == 0
    ens = read_file(ens_file)
    assert isinstance(ens, Ensemble) and set(ens.coef) == {"meso4-f2f", "mesoinception-f2f"}
    # eval: calibration measured before and after, a reliability diagram, the ensemble beside its members
    report = tmp_path / "report"
    assert main(["eval", str(dfdc), "--out", str(report), "--model", "ensemble:meso4-f2f,mesoinception-f2f",
                 "--calibration", str(ens_file), *common[:-2], "--no-cache"]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["members"]) == {"meso4-f2f", "mesoinception-f2f"} and (report / "reliability.png").stat().st_size
    assert 0 <= metrics["calibration"]["ece_after"] <= 1 and metrics["models"] == ["ensemble:meso4-f2f,mesoinception-f2f"]
    capsys.readouterr()
    image = str(max((DFDC / "fake").iterdir(), key=lambda f: min(Image.open(f).size)))  # above every floor
    assert main(["scan", image, "--json", "--model", "meso4-f2f", "--calibration", str(out), *common[:-2]]) == 0
    calibrated = json.loads(capsys.readouterr().out)
    assert main(["scan", image, "--json", "--model", "meso4-f2f", *common[:-2]]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert calibrated["score"] == pytest.approx(float(cal.apply(np.array([raw["score"]]))[0]), abs=1e-5)
    # a file for the other model is refused, in words, with exit 2
    assert main(["scan", image, "--model", "meso4-df", "--calibration", str(out), *common[:-2]]) == 2
    assert "not among the models" in capsys.readouterr().err
