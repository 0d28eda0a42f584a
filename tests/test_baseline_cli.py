"""`dfstream baseline` end to end with the real MesoNet weights on shared FF++ clips, then `scan --baseline` and
`eval --baseline` on its pair; refusals leave the output file as it was (too short, a fake stretch, a low-quality
stretch) and `scan`/`eval` refuse a baseline for other weights or a malformed file before scoring anything."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from engines.weights import sha256_of
from stream.cli import EXIT_OK, EXIT_USAGE, main
from stream.config.verdicts import VerdictPolicy
from stream.live.verdicts.baseline import EngineKey, fit, read, write

from support.shared import FFPP, MESONET_WEIGHTS
from support.parts import needs
from support.rtsp_server import RtspServer, unavailable_reason

pytestmark = pytest.mark.slow
ENGINE_ARGS = ["--weights-dir", str(MESONET_WEIGHTS), "--offline", "--device", "cpu"]
REAL, FAKE = FFPP / "real" / "519.mp4", FFPP / "fake" / "Deepfakes_519_515.mp4"  # same scene; meso4-f2f sees it
LEARN_S = 6.0
REPO = Path(__file__).resolve().parents[1]
LIVE_TIMEOUT_S = 240  # 6 s of stream plus loading the model and MTCNN on a loaded machine; a run that ignores
# --seconds on a live camera would never end, and is killed here


def _cut(src: Path, dst: Path, start: float, seconds: float, scale: float = 1.0) -> Path:
    """Frames [start, start + seconds) of `src` re-encoded (H.264, CRF 16), optionally scaled."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        w, h = (int(vin.width * scale) // 2 * 2, int(vin.height * scale) // 2 * 2)
        vout = out.add_stream("libx264", rate=vin.average_rate, options={"crf": "16"})
        vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
        n = 0
        for frame in inp.decode(vin):
            if frame.time < start:
                continue
            if frame.time >= start + seconds:
                break
            frame = frame.reformat(width=w, height=h, format="yuv420p")
            frame.pts, frame.time_base, n = n, Fraction(1, int(vin.average_rate)), n + 1  # one tick a frame
            out.mux(vout.encode(frame))
        out.mux(vout.encode(None))
    return dst


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """The real clip after the learned stretch, its swapped twin, and a scene too small for meso4-f2f's floor."""
    d = tmp_path_factory.mktemp("clips")
    return {"rest": _cut(REAL, d / "519-rest.mp4", LEARN_S, 8.0),
            "swap": _cut(FAKE, d / "519-swap.mp4", 0.0, 8.0),
            "small": _cut(FFPP / "real" / "634.mp4", d / "634-small.mp4", 0.0, 4.0, scale=0.3)}


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("baseline") / "cam.baseline.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["baseline", str(REAL), "--seconds", str(LEARN_S), "--out", str(out), *ENGINE_ARGS])
    assert code == EXIT_OK
    return out, buf.getvalue()


def test_baseline_learns_from_real_footage_and_prints_what_it_learned(learned):
    path, printed = learned
    b = read(path)
    assert b.model == "meso4-f2f" and b.fps == 5.0 and b.alpha == 0.01
    assert b.engines[0].weights_sha256 == sha256_of(MESONET_WEIGHTS / "Meso4_F2F.h5")
    assert 25 <= b.faces <= 35 and b.n_eff == b.faces // 9  # 6 s at 5 fps; blocks of the median window
    assert b.max_seen < b.policy.t_high <= b.threshold
    assert f"{b.faces} faces, {b.n_eff} effective samples" in printed
    assert f"threshold {b.threshold:.4f}" in printed and "alpha 0.01" in printed and f"wrote {path}" in printed


def test_scan_with_the_baseline_calls_the_swap_fake_and_the_rest_of_the_real_clip_real(learned, clips, capsys):
    path, _ = learned
    capsys.readouterr()
    code = main(["scan", str(clips["swap"]), str(clips["rest"]), "--baseline", str(path), "--json", *ENGINE_ARGS])
    assert code == EXIT_OK
    swap, rest = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert swap["label"] == "fake" and swap["baseline"]["label"] == "fake"
    assert rest["label"] == "real" and all(t["verdict"] != "fake" for t in rest["baseline"]["tracks"])
    assert swap["threshold"] == rest["threshold"] == read(path).threshold


def test_eval_with_the_baseline_counts_false_alarms_and_catches(learned, clips, tmp_path):
    path, _ = learned
    data = tmp_path / "data"
    for label, clip in (("real", clips["rest"]), ("fake", clips["swap"])):
        (data / label).mkdir(parents=True)
        (data / label / clip.name).symlink_to(clip)
    assert main(["eval", str(data), "--out", str(tmp_path / "out"), "--baseline", str(path), *ENGINE_ARGS]) \
        in (EXIT_OK,)
    b = json.loads((tmp_path / "out" / "metrics.json").read_text())["baseline"]
    assert b["camera"] == {"false_alarms": 0, "real": 1, "catches": 1, "fake": 1}
    assert b["threshold"] == read(path).threshold and len(b["files"]) == 2


@pytest.mark.parametrize("media, extra, says", [
    ("real", ["--seconds", "1"], "too few effective samples"),
    ("fake", ["--seconds", "4"], "already calls this stretch fake"),
    ("small", [], "low-quality stretch"),
], ids=["too-short", "fake-stretch", "low-quality"])
def test_refused_footage_writes_nothing_and_keeps_the_old_file(tmp_path, clips, capsys, media, extra, says):
    source = {"real": REAL, "fake": FAKE, "small": clips.get("small")}[media]
    out = tmp_path / "cam.baseline.json"
    out.write_text("the previous baseline\n")
    code = main(["baseline", str(source), "--out", str(out), *extra, *ENGINE_ARGS])
    assert code == EXIT_USAGE
    assert says in capsys.readouterr().err
    assert out.read_text() == "the previous baseline\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.baseline.json"]  # no temporary left either


def _synthetic_baseline(path: Path, weights_sha: str) -> Path:
    b = fit([[{"meso4-f2f": 0.05}] * 30], VerdictPolicy(), model="meso4-f2f",
            engines=[EngineKey(model="meso4-f2f", weights_sha256=weights_sha)], source="cam", fps=5.0)
    return write(b, path)


def test_scan_and_eval_refuse_a_baseline_for_other_weights_before_scoring(tmp_path, capsys):
    path = _synthetic_baseline(tmp_path / "b.json", sha256_of(MESONET_WEIGHTS / "Meso4_F2F.h5"))
    other = ["--model", "meso4-f2f", "--weights", str(MESONET_WEIGHTS / "Meso4_DF.h5")]  # from another file
    assert main(["scan", str(REAL), "--baseline", str(path), *other, *ENGINE_ARGS]) == EXIT_USAGE
    assert "other weights of meso4-f2f" in capsys.readouterr().err
    assert main(["eval", str(FFPP), "--out", str(tmp_path / "out"), "--baseline", str(path), *other,
                 *ENGINE_ARGS]) == EXIT_USAGE
    assert "other weights of meso4-f2f" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_scan_refuses_a_malformed_baseline_and_another_fps(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "dfstream-baseline", "version": 1}')
    assert main(["scan", str(REAL), "--baseline", str(bad), *ENGINE_ARGS]) == EXIT_USAGE
    assert "malformed baseline" in capsys.readouterr().err
    good = _synthetic_baseline(tmp_path / "b.json", sha256_of(MESONET_WEIGHTS / "Meso4_F2F.h5"))
    assert main(["scan", str(REAL), "--baseline", str(good), "--fps", "2", *ENGINE_ARGS]) == EXIT_USAGE
    assert "learned at 5 analysed fps" in capsys.readouterr().err


def test_a_live_source_needs_seconds(tmp_path, capsys):
    assert main(["baseline", "rtsp://127.0.0.1:9/cam", "--out", str(tmp_path / "b.json"), *ENGINE_ARGS]) == EXIT_USAGE
    assert "--seconds" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
    np.testing.assert_equal(sorted(tmp_path.iterdir()), [])


@needs("GStreamer's RTSP server", unavailable_reason())
def test_baseline_learns_from_a_live_rtsp_camera_for_n_seconds(tmp_path):
    """A real RTSP camera (gst-rtsp-server looping a shared clip): learning stops after --seconds of stream time,
    and the file names the camera without its credentials."""
    out = tmp_path / "door.baseline.json"
    with RtspServer(FFPP / "real" / "004.mp4") as camera:
        url = camera.url.replace("rtsp://", "rtsp://admin:s3cret@")
        done = subprocess.run([sys.executable, "-m", "stream", "baseline", url, "--seconds", "6", "--out", str(out),
                               *ENGINE_ARGS], capture_output=True, text=True, timeout=LIVE_TIMEOUT_S, cwd=REPO)
    assert done.returncode == EXIT_OK, done.stderr
    b = read(out)
    assert "s3cret" not in out.read_text() and b.source == f"rtsp://***@127.0.0.1:{camera.port}/live"
    # 6 s at 5 analysed fps: at most 31 frames, so at most 3 whole blocks of 9 on the one subject's track; faces may
    # count a few more than frames (a stray second detection in a frame is its own face), never a learning that ran on
    assert b.fps == 5.0 and 20 <= b.faces + b.gated <= 31 + 6 and 2 <= b.n_eff <= 31 // b.block
