"""benchmarks/robustness.py on a tiny setting (one real and one fake clip, 1 s at 2 fps, one model, one level of
each kind), so the benchmark does not rot: every level yields scored face-frames and every table comes out."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from support.shared import FFPP, MESONET_WEIGHTS

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "robustness.py"


def _bench():
    spec = importlib.util.spec_from_file_location("robustness_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_sharpness_is_the_laplacian_variance():
    bench = _bench()
    flat = np.full((128, 128, 3), 90, np.uint8)
    assert bench.sharpness(flat) == 0.0
    checker = (np.indices((128, 128)).sum(0) % 2 * 255).astype(np.uint8)
    # each interior pixel's Laplacian is +-4*255 (its four neighbours are the other colour): variance (4*255)^2
    assert bench.sharpness(np.repeat(checker[..., None], 3, axis=2)) == pytest.approx((4 * 255.0) ** 2)


def test_levels_parse():
    bench = _bench()
    assert bench.parse_level("webrtc-h264-300-360p") == bench.Level("webrtc-h264-300-360p", "webrtc", lines=360,
                                                                     codec="h264", kbps=300)
    assert bench.parse_level("res-240").crf == bench.RES_CRF
    with pytest.raises(Exception):
        bench.parse_level("webrtc-av1-300")


@pytest.mark.slow
def test_tiny_run(ffpp, tmp_path):
    out = tmp_path / "r.json"
    result = _bench().main([
        "--real", str(FFPP / "real" / "004.mp4"), "--fake", str(FFPP / "fake" / "NeuralTextures_004_982.mp4"),
        "--model", "meso4-df", "--weights-dir", str(MESONET_WEIGHTS), "--seconds", "1", "--fps", "2",
        "--level", "res-360", "--level", "crf-35", "--level", "webrtc-vp8-300-360p", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["floors"].keys() == {"meso4-df"}
    levels = {r["level"] for r in result["per_level"] if r["n_real"] and r["n_fake"]}
    assert levels == {"original", "res-360", "crf-35", "webrtc-vp8-300-360p"}  # each one scored faces
    webrtc = result["level_info"]["webrtc-vp8-300-360p"]
    assert webrtc["decoded"] == webrtc["wanted"] == 4  # the last sampled frame gets through the jitter buffer too
    assert 150 < webrtc["kbps"][0] < 600  # pinned near 300 kbps, below aiortc's own VP8 floor of 250 + REMB
    assert "== floors" in result["text"]
