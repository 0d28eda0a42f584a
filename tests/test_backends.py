"""Backend selection and preparation; TensorRT cache naming; the `models` and `engines` commands."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engines.backends import BackendUnavailable, available_backends, choose, prepare, unavailable_reasons
from engines.base import TorchEngine
from engines.onnx_backend import OnnxEngine
from engines.registry import build_engine
from engines.tensorrt_backend import BatchProfile, engine_cache_name

from support.shared import MESONET_WEIGHTS
from support.sensitive import assert_close, assert_spread

ORT_TOL = 1e-4
TRT_FP16_TOL = 1e-2
TRT_SPREAD_FACTOR = 10  # p(fake) spans at most 1, so 100 x the fp16 tolerance cannot be asked for

ROOT = Path(__file__).resolve().parents[1]
TRT_REASON = unavailable_reasons()["tensorrt"]


def test_auto_prefers_tensorrt_then_cuda_then_onnx():
    reasons = unavailable_reasons()
    expected = ("tensorrt" if reasons["tensorrt"] is None else
                "torch" if reasons["cuda"] is None else "onnx")
    assert choose("auto") == expected
    assert "torch" in available_backends() and "onnx" in available_backends()


@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT is available here")
def test_unavailable_backend_is_refused_with_reason():
    with pytest.raises(BackendUnavailable, match="tensorrt is unavailable here"):
        choose("tensorrt")


def test_prepare_onnx_matches_torch_and_is_cached(tmp_path, ffpp_face_crops):
    torch_engine = build_engine("meso4-df", weights_dir=MESONET_WEIGHTS, allow_download=False)
    crops = ffpp_face_crops(256)[:6]
    expected = torch_engine.predict(crops)
    assert_spread(expected, ORT_TOL, what="meso4-df torch")
    ort = prepare(torch_engine, "onnx", "fp32", cache_dir=tmp_path)
    assert isinstance(ort, OnnxEngine) and ort.path.parent == tmp_path
    assert_close(expected, ort.predict(crops), ORT_TOL, "meso4-df ORT vs torch")
    assert prepare(torch_engine, "torch") is torch_engine


def test_precision_misuse_is_clear(tmp_path):
    engine = build_engine("meso4-df", weights_dir=MESONET_WEIGHTS, allow_download=False)
    with pytest.raises(BackendUnavailable, match="int8 runs on the onnx or tensorrt"):
        prepare(engine, "torch", "int8", cache_dir=tmp_path)
    with pytest.raises(BackendUnavailable, match="no fast fp16"):
        prepare(engine, "onnx", "fp16", cache_dir=tmp_path)
    with pytest.raises(BackendUnavailable, match="calibration"):
        prepare(engine, "onnx", "int8", cache_dir=tmp_path)
    if engine.device.type == "cpu":
        with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
            prepare(engine, "torch", "fp16", cache_dir=tmp_path)


def test_tensorrt_cache_name_changes_with_every_input():
    base = dict(name="xception-140k", onnx_sha256="a" * 64, trt_version="10.9.0", gpu_name="NVIDIA H100 80GB HBM3",
                capability=(9, 0), precision="fp16", profile=BatchProfile(min=1, opt=8, max=32))
    name = engine_cache_name(**base)
    assert name == "xception-140k-aaaaaaaaaaaaaaaa-trt10-9-0-nvidia-h100-80gb-hbm3-sm90-fp16-b1_8_32.engine"
    variants = [dict(onnx_sha256="b" * 64), dict(trt_version="10.10.0"), dict(gpu_name="NVIDIA L4"),
                dict(capability=(8, 9)), dict(precision="int8"), dict(profile=BatchProfile(min=1, opt=4, max=16))]
    names = {engine_cache_name(**{**base, **v}) for v in variants}
    assert len(names) == len(variants) and name not in names
    with pytest.raises(ValueError):
        engine_cache_name(**{**base, "precision": "fp8"})
    with pytest.raises(ValueError):
        BatchProfile(min=8, opt=4, max=16)


@pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT unavailable: {TRT_REASON}")
def test_tensorrt_fp16_matches_torch(tmp_path, ffpp_face_crops):
    torch_engine = build_engine("meso4-df", weights_dir=MESONET_WEIGHTS, allow_download=False, device="cuda")
    crops = ffpp_face_crops(256)[:8]
    trt = prepare(torch_engine, "tensorrt", "fp16", cache_dir=tmp_path)
    expected = torch_engine.predict(crops)
    assert_spread(expected, TRT_FP16_TOL, TRT_SPREAD_FACTOR, what="meso4-df torch (CUDA)")
    assert_close(expected, trt.predict(crops), TRT_FP16_TOL, "meso4-df TensorRT fp16 vs torch")
    first = sorted(tmp_path.glob("*.engine"))
    prepare(torch_engine, "tensorrt", "fp16", cache_dir=tmp_path)
    assert sorted(tmp_path.glob("*.engine")) == first  # reused, not rebuilt


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # over 6 s in the fast tier (pytest --fast --durations=30, 2026-12-08)
def test_models_list_reports_presence_and_hashes(tmp_path):
    proc = cli("models", "list", "--weights-dir", str(MESONET_WEIGHTS), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    for name in ("meso4-df", "meso4-f2f", "mesoinception-df", "mesoinception-f2f"):
        assert rows[name]["here"] == "yes" and rows[name]["hash"] == "sha256 pinned"
        assert "MesoNet" in rows[name]["card / paper"] and rows[name]["licence"].startswith("Apache-2.0")
    assert rows["xception-140k"]["here"] == "no" and rows["xception-140k"]["hash"].startswith("unverified")
    assert rows["effb4att-ffpp"]["trained on"].startswith("FaceForensics++")
    assert "ICPR 2020" in rows["effb4att-ffpp"]["card / paper"] and "GPL" in rows["effb4att-ffpp"]["licence"]
    assert "WACV 2026" in rows["gend-clip-l14"]["card / paper"]
    # every row says where it comes from, what it was trained on, its licence and its backends
    assert all(row[col] != "-" for row in rows.values() for col in ("card / paper", "trained on", "licence",
                                                                     "backends"))
    bad = tmp_path / "Meso4_DF.h5"
    bad.write_bytes((MESONET_WEIGHTS / "Meso4_DF.h5").read_bytes()[:-10])
    proc = cli("models", "list", "--weights-dir", str(tmp_path), "--json")
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["meso4-df"]["here"] == "MISMATCH: weights" and rows["meso4-f2f"]["here"] == "no"
    table = cli("models", "list", "--weights-dir", str(MESONET_WEIGHTS))
    assert table.returncode == 0 and "effb4attst-ffpp" in table.stdout and "sha256 pinned" in table.stdout


@pytest.mark.slow  # over 6 s in the fast tier (pytest --fast --durations=30, 2026-12-08)
def test_engines_build_onnx_and_refusals(tmp_path):
    proc = cli("engines", "build", "meso4-f2f", "--backend", "onnx", "--weights-dir", str(MESONET_WEIGHTS),
               "--cache-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert len(list(tmp_path.glob("meso4-f2f-*.onnx"))) == 1
    proc = cli("engines", "build", "meso4-f2f", "--backend", "onnx", "--precision", "fp16",
               "--weights-dir", str(MESONET_WEIGHTS), "--cache-dir", str(tmp_path))
    assert proc.returncode == 2 and "fp16" in proc.stderr
    proc = cli("models", "pull", "meso4-df", "--weights-dir", str(MESONET_WEIGHTS))
    assert proc.returncode == 0 and "Meso4_DF.h5" in proc.stdout
