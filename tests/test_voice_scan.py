"""`dfstream scan` and `eval` on voices, through the command line with the published AASIST weights.

- `scan --json --model aasist` of a clip of exactly 64600 samples gives the authors' code's p(fake) within 1e-4
  (the clip read as their loader reads it, soundfile-style int16 / 32768, through their pad and their Model);
- a video without an audio track: `no-audio` for voice, no error, and faces still judged with `--modality both`;
- `eval --modality voice` on real/ and fake/GENERATOR/ speech writes AUC and EER (checked against sklearn);
- bad inputs (a file that is not media, a wrong weights sha256, a voice model on faces) are refused clearly.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from support.aasist_ref import Model as AuthorsModel
from stream.cli import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE, main
from stream.jobs.voice_eval import equal_error_rate
from test_aasist import CONFS, TOL
from support.voice_media import AASIST_WEIGHTS, MESONET_WEIGHTS, RATE, SHARED, read_wav, speech_16k, speech_files, write_wav

WINDOW = 64600
VIDEO = SHARED / "data" / "ffpp-c23" / "real" / "004.mp4"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """One weights folder holding the shared AASIST and MesoNet files (links: nothing is copied)."""
    folder = tmp_path_factory.mktemp("weights")
    for f in [*AASIST_WEIGHTS.glob("*.pth"), *MESONET_WEIGHTS.glob("*.h5")]:
        os.symlink(f, folder / f.name)
    return folder


def run_json(capsys, argv: list[str]) -> tuple[int, list[dict]]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_scan_json_of_one_window_matches_the_authors_code(tmp_path, weights, capsys):
    speech = speech_16k(max(speech_files("real"), key=lambda p: p.stat().st_size))
    assert len(speech) > WINDOW
    clip = write_wav(tmp_path / "clip.wav", speech[:WINDOW], RATE)
    x = read_wav(clip)
    assert len(x) == WINDOW
    authors = AuthorsModel(CONFS["aasist"])
    authors.load_state_dict(torch.load(AASIST_WEIGHTS / "AASIST.pth", weights_only=True, map_location="cpu"))
    with torch.no_grad():
        _, logits = authors.eval()(torch.from_numpy(x).float()[None])  # data_utils: Tensor(pad(X)); pad = identity
    expected = float(torch.softmax(logits, 1)[0, 0])

    code, (result,) = run_json(capsys, ["scan", "--json", "--model", "aasist", "--weights-dir", str(weights),
                                        "--offline", "--device", "cpu", str(clip)])
    assert code == EXIT_OK and result["modality"] == "voice" and result["model"] == "aasist"
    assert result["windows_scored"] == 1 and len(result["windows"]) == 1
    assert result["windows"][0]["end_s"] == pytest.approx(WINDOW / RATE, abs=1e-3)  # rounded to the ms
    assert abs(result["score"] - expected) <= TOL, (result["score"], expected)
    assert result["label"] == ("fake" if expected >= 0.5 else "real")


def test_a_video_without_audio_is_no_audio_for_voice_and_faces_still_work(weights, capsys):
    code, (voice,) = run_json(capsys, ["scan", "--json", "--modality", "voice", "--weights-dir", str(weights),
                                       "--offline", str(VIDEO)])
    assert code == EXIT_OK
    assert voice["label"] == "no-audio" and voice["reason"] == "no audio track" and voice["error"] is None
    code, (both,) = run_json(capsys, ["scan", "--json", "--modality", "both", "--weights-dir", str(weights),
                                      "--offline", "--device", "cpu", "--fps", "1", str(VIDEO)])
    assert code == EXIT_OK and both["modality"] == "both"
    assert both["voice"]["label"] == "no-audio"
    assert both["face"]["label"] in ("real", "fake") and both["face"]["score"] is not None
    assert both["face"]["frames_scored"] > 0 and both["face"]["model"] == "meso4-f2f"


def test_bad_inputs_are_refused_clearly(tmp_path, weights, capsys):
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n")
    code, (result,) = run_json(capsys, ["scan", "--json", "--model", "aasist", "--weights-dir", str(weights),
                                        "--offline", str(text)])
    assert code == EXIT_INPUT_FAILED and result["label"] == "error" and "not a readable media file" in result["error"]
    assert text.read_text() == "not audio\n"

    bad = tmp_path / "bad-weights"
    bad.mkdir()
    shutil.copyfile(AASIST_WEIGHTS / "AASIST-L.pth", bad / "AASIST.pth")
    before = (bad / "AASIST.pth").read_bytes()
    assert main(["scan", "--model", "aasist", "--weights-dir", str(bad), "--offline", str(text)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "sha256" in err and "AASIST.pth" in err
    assert (bad / "AASIST.pth").read_bytes() == before  # the user's file is left as it was

    assert main(["scan", "--modality", "face", "--model", "aasist", str(text)]) == EXIT_USAGE
    assert "voice model" in capsys.readouterr().err
    assert main(["scan", "--modality", "voice", "--model", "meso4-f2f", str(text)]) == EXIT_USAGE
    assert "face model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def speech_dataset(tmp_path_factory):
    """real/ (3 files) and fake/<generator>/ (2 generators, 2 files each), linked from the shared speech."""
    root = tmp_path_factory.mktemp("speech")
    real = [p for p in speech_files("real") if p.name.startswith("wavefake")][:3]
    fakes = {"wavefake": [p for p in speech_files("fake") if p.name.startswith("wavefake")][:2],
             "fastspeech-gl": [p for p in speech_files("fake") if "fastspeech.v1_GL" in p.name][:2]}
    (root / "real").mkdir()
    for p in real:
        os.symlink(p, root / "real" / p.name)
    for generator, files in fakes.items():
        (root / "fake" / generator).mkdir(parents=True)
        for p in files:
            os.symlink(p, root / "fake" / generator / p.name)
    (root / "real" / "silence.wav").symlink_to(write_wav(root / "silence-src.wav", np.zeros(3 * RATE), RATE))
    return root


@pytest.mark.slow  # 19 s (pytest --fast --durations=30, 2026-12-07)
def test_eval_voice_writes_auc_and_eer(speech_dataset, weights, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    out = tmp_path / "report"
    code = main(["eval", str(speech_dataset), "--modality", "voice", "--model", "aasist-l", "--weights-dir",
                 str(weights), "--offline", "--out", str(out)])
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["modality"] == "voice" and metrics["models"] == ["aasist-l"]
    rows = [line.split(",") for line in (out / "voices.csv").read_text().splitlines()[1:]]
    scored = [r for r in rows if r[4]]
    y = np.array([r[1] == "fake" for r in scored], int)
    s = np.array([float(r[4]) for r in scored])
    file = metrics["file"]
    assert (file["real"], file["fake"]) == (3, 4)
    assert file["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert file["eer"] == pytest.approx(equal_error_rate(y, s)[0]) and 0.0 <= file["eer"] <= 1.0
    assert set(metrics["generators"]) == {"wavefake", "fastspeech-gl"}
    assert all(m["real"] == 3 and m["fake"] == 2 and m["auc"] is not None for m in metrics["generators"].values())
    assert metrics["window"]["n"] >= file["n"]
    assert metrics["unscored"] == {"low-quality": [str(speech_dataset / "real" / "silence.wav")]}


def test_eer_is_where_false_accepts_equal_false_rejects():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200, int), np.ones(300, int)]
    s = np.r_[rng.normal(0, 1, 200), rng.normal(1.5, 1, 300)]
    eer, threshold = equal_error_rate(y, s)
    grid = np.sort(s)
    fpr = np.array([(s[y == 0] >= t).mean() for t in grid])
    fnr = np.array([(s[y == 1] < t).mean() for t in grid])
    best = np.abs(fpr - fnr).argmin()
    assert eer == pytest.approx((fpr[best] + fnr[best]) / 2, abs=0.01)
    assert (s[y == 0] >= threshold).mean() == pytest.approx(eer, abs=0.01)
    assert equal_error_rate(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))[0] == 0.0
    assert equal_error_rate(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.1, 0.2]))[0] == 1.0


def test_eval_voice_refuses_a_folder_without_audio(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    (tmp_path / "real" / "a.png").write_bytes(b"png")
    out = tmp_path / "report"
    assert main(["eval", str(tmp_path), "--modality", "voice", "--out", str(out)]) == EXIT_USAGE
    assert "no media files" in capsys.readouterr().err and not out.exists()


def test_both_on_an_audio_file_is_no_face_and_a_voice_verdict(tmp_path, weights, capsys):
    clip = write_wav(tmp_path / "short.wav", speech_16k(speech_files("fake")[0])[:2 * RATE], RATE)
    code, (both,) = run_json(capsys, ["scan", "--json", "--modality", "both", "--model", "aasist-l",
                                      "--weights-dir", str(weights), "--offline", "--device", "cpu", str(clip)])
    assert code == EXIT_OK
    assert both["face"]["label"] == "no-face" and both["face"]["reason"] == "no video track"
    assert both["voice"]["label"] in ("real", "fake") and both["voice"]["model"] == "aasist-l"
