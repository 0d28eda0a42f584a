"""`dfstream scan` end to end through the real CLI: real videos, real MTCNN, real MesoNet weights."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.registry import DEFAULT_MODEL, get_entry
from PIL import Image

from support.shared import FFPP, FFPP_VIDEOS, MESONET_WEIGHTS, SHARED

ROOT = Path(__file__).resolve().parents[1]
SCAN_FPS = "1"  # a few frames per second of video keep the suite fast while every video still gets faces


def run_scan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream", "scan", *args, "--weights-dir", str(MESONET_WEIGHTS), "--offline"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )


def json_lines(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_scan_all_shared_videos():
    proc = run_scan(*map(str, FFPP_VIDEOS), "--model", DEFAULT_MODEL, "--json", "--fps", SCAN_FPS)
    assert proc.returncode == 0, proc.stderr
    results = json_lines(proc)
    assert [r["path"] for r in results] == [str(p) for p in FFPP_VIDEOS] and len(results) == 7
    for r in results:
        assert r["label"] in ("fake", "real") and r["error"] is None
        assert 0.0 <= r["score"] <= 1.0 and r["threshold"] == 0.5 and r["model"] == DEFAULT_MODEL
        assert r["frames_scored"] > 0 and len(r["tracks"]) >= 1
        # the video score is the mean over scored face-frames, i.e. the frame-weighted mean of track scores
        # (over the face-frames that were judged: low-quality ones are counted in frames_scored but not scored)
        judged = [(t["score"], t["frames"] - t["gated"]) for t in r["tracks"] if t["score"] is not None]
        weighted = sum(s * n for s, n in judged) / sum(n for _, n in judged)
        assert r["score"] == pytest.approx(weighted, abs=1e-9)
        assert sum(t["frames"] for t in r["tracks"]) == r["frames_scored"]
        assert r["label"] == ("fake" if r["score"] >= r["threshold"] else "real")


@pytest.fixture
def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    data = (FFPP / "real" / "634.mp4").read_bytes()
    inputs = {
        "truncated": tmp_path / "truncated.mp4",
        "empty": tmp_path / "empty.mp4",
        "text": tmp_path / "notes.mp4",
        "noface": tmp_path / "gradient.png",
        "face": sorted((SHARED / "data" / "faces" / "celeba-hq").glob("*"))[0],
    }
    inputs["truncated"].write_bytes(data[: len(data) // 3])
    inputs["empty"].write_bytes(b"")
    inputs["text"].write_text("this is a text file, not a video\n")
    ramp = np.linspace(0, 255, 320, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(ramp, (240, 1))] * 3, axis=-1)).save(inputs["noface"])
    return inputs


def test_bad_inputs_get_clear_errors_and_the_rest_is_scanned(bad_inputs):
    order = ["truncated", "empty", "text", "noface", "face"]
    proc = run_scan(*(str(bad_inputs[k]) for k in order), "--json")
    assert proc.returncode == 1, proc.stderr  # some input failed, but all were reported
    results = dict(zip(order, json_lines(proc)))
    assert len(results) == 5
    for key, phrase in [("truncated", "cannot open as video"), ("empty", "empty file"),
                        ("text", "cannot open as video")]:
        r = results[key]
        assert r["label"] == "error" and r["score"] is None and phrase in r["error"]
        assert r["path"] == str(bad_inputs[key])
    assert results["noface"]["label"] == "no-face" and results["noface"]["error"] is None
    assert results["noface"]["frames_scored"] == 0 and results["noface"]["tracks"] == []
    assert results["face"]["label"] in ("fake", "real") and results["face"]["frames_scored"] == 1


def test_table_output_and_exit_zero_on_success():
    face = sorted((SHARED / "data" / "faces" / "celeba-hq").glob("*"))[0]
    proc = run_scan(str(face))
    assert proc.returncode == 0, proc.stderr
    assert face.name in proc.stdout and DEFAULT_MODEL in proc.stdout


def test_faces_none_scores_whole_crops_with_two_models_fused():
    crops = sorted((SHARED / "data" / "faces" / "dfdc-crops" / "fake").glob("*"))[:2]
    proc = run_scan(*map(str, crops), "--faces", "none", "--model", "meso4-df", "--model", "meso4-f2f", "--json")
    assert proc.returncode == 0, proc.stderr
    for r in json_lines(proc):
        assert r["model"] == "meso4-df+meso4-f2f" and r["frames_scored"] == 1
        assert r["score"] == pytest.approx(np.mean(list(r["engines"].values())), abs=1e-6)


@pytest.mark.slow  # over 6 s in the fast tier (pytest --fast --durations=30, 2026-12-08)
def test_unknown_model_and_missing_weights_are_usage_errors(tmp_path):
    face = sorted((SHARED / "data" / "faces" / "celeba-hq").glob("*"))[0]
    proc = run_scan(str(face), "--model", "nope")
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr and "meso4-df" in proc.stderr
    # the default (`auto`) offline with no weights at all: says where it looked and how to get the small model
    proc = subprocess.run(
        [sys.executable, "-m", "stream", "scan", str(face), "--weights-dir", str(tmp_path), "--offline"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "found no usable weights" in proc.stderr and f"models pull {DEFAULT_MODEL}" in proc.stderr
    assert str(tmp_path) in proc.stderr
    # a named model whose file is missing: its file name and its public address
    proc = subprocess.run(
        [sys.executable, "-m", "stream", "scan", str(face), "--model", DEFAULT_MODEL, "--weights-dir", str(tmp_path),
         "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert get_entry(DEFAULT_MODEL).weights.filename in proc.stderr and "raw.githubusercontent.com/DariusAf/MesoNet" in proc.stderr
    assert str(tmp_path) in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-downloaded or written


@pytest.mark.slow  # 20 s (pytest --fast --durations=30, 2026-12-07)
def test_scan_with_a_clip_engine_uses_consecutive_face_frames(tmp_path):
    """A (tiny, random) VideoMAE checkpoint through the real CLI: clips come from each track's ring."""
    from test_videomae import make_checkpoint

    ckpt = tmp_path / "videomae"
    make_checkpoint(ckpt, 32, 4)
    video = FFPP / "real" / "004.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "stream", "scan", str(video), "--model", "videomae", "--weights", str(ckpt),
         "--fps", "2", "--json", "--backend", "torch"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (r,) = json_lines(proc)
    assert r["label"] in ("fake", "real") and r["model"] == "videomae"
    assert 0.0 <= r["engines"]["videomae"] <= 1.0 and r["frames_scored"] >= 4
    face = sorted((SHARED / "data" / "faces" / "celeba-hq").glob("*"))[0]
    proc = subprocess.run(
        [sys.executable, "-m", "stream", "scan", str(face), "--model", "videomae", "--weights", str(ckpt),
         "--json", "--backend", "torch"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    (r,) = json_lines(proc)
    assert proc.returncode == 1 and r["label"] == "error" and "too short for videomae" in r["error"]
