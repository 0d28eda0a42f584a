"""Tracking for real: `train --mlflow` against MLflow with a `file:` store under tmp_path (read back with
`MlflowClient`), and `--track-emissions` through CodeCarbon's offline tracker on `train` and `eval` (no network).

The data is the shared CelebA-HQ face crops (`--faces none`), a few per class: the tests check what is logged,
not what the model learns.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.shared import MESONET_WEIGHTS, SHARED
from support.parts import needs
from stream.cli import EXIT_OK, EXIT_USAGE, main
from stream.jobs.train.tracking import CODECARBON_MISSING, EMISSIONS_CSV, MAX_PARAM_CHARS, flatten


def _missing(module: str, package: str) -> str | None:
    found = importlib.util.find_spec(module) is not None
    return None if found else f"{package} is not installed (the test extra has it: scripts/setup.sh test)"


NEEDS_MLFLOW = needs("MLflow", _missing("mlflow", "mlflow-skinny"))
NEEDS_CODECARBON = needs("CodeCarbon", _missing("codecarbon", "codecarbon"))

ROOT = Path(__file__).resolve().parents[1]
FACES = sorted((SHARED / "data" / "faces" / "celeba-hq").glob("*.jpg"))
PER_CLASS = 3  # the fewest videos a class may have for a validation split of 0.2 that leaves two to train on
TRAIN_SIZE = "71"  # the smallest crop Xception's stem and pools take
EVAL_ARGS = ["--model", "meso4-df", "--weights-dir", str(MESONET_WEIGHTS), "--offline", "--backend", "torch",
             "--faces", "none", "--no-cache"]
EMISSION_NUMBERS = ("co2eq_kg", "energy_kwh", "duration_s", "cpu_energy_kwh", "gpu_energy_kwh", "ram_energy_kwh")
# `main` with codecarbon hidden (an installed package that cannot be imported); each argv's exit code printed.
WITHOUT_CODECARBON = """
import json, sys
sys.modules["codecarbon"] = None
from stream.cli import main
print(json.dumps([main(argv) for argv in json.loads(sys.argv[1])]))
"""


def _faces(root: Path, per_class: int) -> Path:
    """real/ and fake/ of distinct face crops (linked, not copied): each image is its own video."""
    assert len(FACES) >= 2 * per_class, f"expected CelebA-HQ faces in {FACES and FACES[0].parent}"
    for k, face in enumerate(FACES[:2 * per_class]):
        link = root / ("real" if k < per_class else "fake") / face.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(face)
    return root


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "xception", str(data), "--out", str(out), "--epochs", "1", "--size", TRAIN_SIZE,
            "--batch-size", "8", "--faces", "none", "--no-cache", "--no-progress", *extra]


@pytest.fixture
def file_store(tmp_path: Path, monkeypatch) -> str:
    """MLflow's own settings point the run at a `file:` store in tmp_path (MLflow 3 asks for an explicit opt-in
    to its file store)."""
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def _check_emissions(block: dict, out: Path, country: str) -> None:
    assert block["duration_s"] > 0 and block["energy_kwh"] >= 0 and block["co2eq_kg"] >= 0
    assert block["energy_kwh"] == pytest.approx(block["cpu_energy_kwh"] + block["gpu_energy_kwh"]
                                                + block["ram_energy_kwh"])
    assert block["country_iso_code"] == country and block["tracker"] == "codecarbon.OfflineEmissionsTracker"
    assert block["method"] and all(isinstance(m, str) for m in block["method"])
    assert block["file"] == str(out / EMISSIONS_CSV)
    with open(out / EMISSIONS_CSV, newline="") as f:
        (row,) = list(csv.DictReader(f))  # one row per tracked job
    assert float(row["duration"]) == pytest.approx(block["duration_s"])
    assert float(row["emissions"]) == pytest.approx(block["co2eq_kg"])
    assert row["country_iso_code"] == country


@pytest.mark.slow  # 11 s (pytest --fast --durations=30, 2026-12-07)
@NEEDS_MLFLOW
@NEEDS_CODECARBON
def test_train_logs_what_metrics_json_holds_to_a_real_mlflow_file_store(file_store: str, tmp_path: Path) -> None:
    import mlflow

    data, out = _faces(tmp_path / "data", PER_CLASS), tmp_path / "out"
    assert main(_train_args(data, out, "--mlflow", "--mlflow-experiment", "tracked", "--track-emissions")) == EXIT_OK
    report = json.loads((out / "metrics.json").read_text())
    assert report["mlflow"]["tracking_uri"] == file_store
    _check_emissions(report["emissions"], out, "ESP")

    client = mlflow.tracking.MlflowClient(tracking_uri=file_store)
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None and experiment.experiment_id == report["mlflow"]["experiment_id"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == report["mlflow"]["run_id"] and run.info.status == "FINISHED"
    assert run.info.run_name == f"xception-{data.name}"

    # parameters: the run's settings as metrics.json has them, plus how the emissions were measured
    params = run.data.params
    for key, value in flatten(report["config"]).items():
        expected = value if isinstance(value, str) else json.dumps(value)
        assert params.pop(key) == expected[:MAX_PARAM_CHARS], key
    emissions = report["emissions"]
    assert params.pop("emissions.country_iso_code") == "ESP"
    assert json.loads(params.pop("emissions.method")) == emissions["method"]
    assert set(params) == {"emissions.tracker", "emissions.tracking_mode", "emissions.codecarbon_version"}

    # metrics: every epoch at its step, the best epoch's validation, the emissions
    run_id = run.info.run_id
    (epoch,) = report["history"]
    for key, value in epoch.items():
        if key != "epoch":
            history = client.get_metric_history(run_id, key)
            assert [(m.step, m.value) for m in history] == [(1, pytest.approx(value))], key
    metrics = run.data.metrics
    for key, value in report["val"].items():
        assert metrics[f"best.{key}"] == pytest.approx(value), key
    for key in EMISSION_NUMBERS:
        assert metrics[f"emissions.{key}"] == pytest.approx(emissions[key]), key
    assert metrics["emissions.duration_s"] > 0 and metrics["emissions.energy_kwh"] >= 0

    # artifacts: the weights, metrics.json and the emissions CSV, byte for byte
    names = sorted(a.path for a in client.list_artifacts(run_id))
    assert names == sorted(["best_xception.pth", "metrics.json", EMISSIONS_CSV])
    got = Path(client.download_artifacts(run_id, "", str(tmp_path / "artifacts")))
    for name in names:
        assert (got / name).read_bytes() == (out / name).read_bytes(), name


@NEEDS_MLFLOW
def test_train_with_a_store_mlflow_refuses_exits_2_before_training(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nope://nowhere")
    out = tmp_path / "out"
    assert main(_train_args(_faces(tmp_path / "data", PER_CLASS), out, "--mlflow")) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--mlflow: cannot use the tracking store 'nope://nowhere'" in err
    assert not (out / "metrics.json").exists() and not (out / "checkpoint.pt").exists()


@NEEDS_CODECARBON
def test_eval_track_emissions_writes_an_emissions_block(tmp_path: Path) -> None:
    data, out = _faces(tmp_path / "data", 1), tmp_path / "out"
    argv = ["eval", str(data), "--out", str(out), *EVAL_ARGS, "--track-emissions", "--emissions-country", "fra"]
    assert main(argv) == EXIT_OK
    report = json.loads((out / "metrics.json").read_text())
    assert report["video"]["n"] == 2  # the eval itself is all there
    _check_emissions(report["emissions"], out, "FRA")
    assert report["emissions"]["country_name"] == "France"


def test_eval_without_track_emissions_has_no_block(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["eval", str(_faces(tmp_path / "data", 1)), "--out", str(out), *EVAL_ARGS]) == EXIT_OK
    assert "emissions" not in json.loads((out / "metrics.json").read_text()) and not (out / EMISSIONS_CSV).exists()


@NEEDS_CODECARBON
def test_an_unknown_emissions_country_exits_2(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["eval", str(_faces(tmp_path / "data", 1)), "--out", str(out), *EVAL_ARGS, "--track-emissions",
            "--emissions-country", "XYZ"]
    assert main(argv) == EXIT_USAGE
    assert "--emissions-country 'XYZ' is not in CodeCarbon's energy-mix table" in capsys.readouterr().err
    assert not out.exists()


def test_track_emissions_without_codecarbon_exits_2_naming_the_package(tmp_path: Path) -> None:
    data = _faces(tmp_path / "data", PER_CLASS)
    train_out, eval_out = tmp_path / "train", tmp_path / "eval"
    argvs = [_train_args(data, train_out, "--track-emissions"),
             ["eval", str(data), "--out", str(eval_out), *EVAL_ARGS, "--track-emissions"]]
    done = subprocess.run([sys.executable, "-c", WITHOUT_CODECARBON, json.dumps(argvs)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [EXIT_USAGE, EXIT_USAGE]
    assert done.stderr.count(CODECARBON_MISSING) == 2 and "codecarbon" in CODECARBON_MISSING
    assert f"dfstream train: {CODECARBON_MISSING}" in done.stderr
    assert f"dfstream eval: {CODECARBON_MISSING}" in done.stderr
    assert not train_out.exists() and not eval_out.exists()  # refused before any work
