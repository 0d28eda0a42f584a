"""Voice baselines: the faces' rule and file (stream/live/verdicts/baseline.py, `modality: voice`) learned from a
stream's scored voice windows, and `dfstream baseline --modality voice` / `scan --modality voice --baseline`.

- The rule's refusals for voices, each leaving nothing behind: too few windows (with the seconds of speech still
  needed), too little speech, a file of the other modality, another voice engine's file, a malformed file.
- Real speech, real weights (AASIST-L, ../shared/weights/aasist/): a voice bar learned on one stretch of the
  LJSpeech speaker gives no voice alert on more of that speaker's real speech, where the global voice bar alerts
  (AASIST-L calls this studio speech fake: docs/voices.md).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from stream.cli import EXIT_OK, EXIT_USAGE, main
from stream.config.verdicts import VerdictPolicy
from stream.config.voices import VOICE_VERDICT
from stream.live.verdicts.baseline import BaselineError, EngineKey, check, fit, read, write

from support.voice_media import AASIST_WEIGHTS, RATE, SPEECH, melody, speech_16k, write_wav

SHA = "cd" * 32
KEY = [EngineKey(model="aasist-l", weights_sha256=SHA)]


def windows(ps) -> list[dict[str, float]]:
    return [{"aasist-l": float(p)} for p in ps]


def voice_fit(ps, **kw):
    return fit([windows(ps)], VOICE_VERDICT, model="aasist-l", engines=KEY, source="mic", fps=0.5,
               modality="voice", **kw)


# ------------------------------------------------------------------ the rule, for voices

def test_a_voice_baseline_says_its_modality_and_counts_windows(tmp_path):
    b = voice_fit(np.linspace(0.2, 0.6, 12))
    assert b.modality == "voice" and b.faces == 12 and b.block == 3 and b.n_eff == 4 and b.fps == 0.5
    assert "12 voice windows" in b.summary()
    assert read(write(b, tmp_path / "v.json")).modality == "voice"
    legacy = json.loads((tmp_path / "v.json").read_text())
    legacy.pop("modality")  # files from before voice baselines are face baselines
    (tmp_path / "old.json").write_text(json.dumps(legacy))
    assert read(tmp_path / "old.json").modality == "face"


def test_too_few_windows_are_refused_with_the_speech_still_needed():
    with pytest.raises(BaselineError, match=r"1 block\(s\) of 3 .* learn from 4 s more of speech "
                                            r"\(at 0.5 windows a second\)"):
        voice_fit([0.3, 0.4, 0.35, 0.3])


def test_too_little_speech_is_refused_with_its_reason():
    with pytest.raises(BaselineError, match="too little speech: none of the 7 voice windows .*only 3 % speech"):
        fit([[]], VOICE_VERDICT, model="aasist-l", engines=KEY, source="mic", fps=0.5, gated=7,
            gated_reason="only 3 % speech", modality="voice")
    with pytest.raises(BaselineError, match="the stream had no sound"):
        fit([], VOICE_VERDICT, model="aasist-l", engines=KEY, source="mic", fps=0.5, modality="voice")


def test_a_file_is_refused_for_the_other_modality_and_for_another_voice_engine(tmp_path):
    voice = voice_fit(np.linspace(0.2, 0.6, 12))
    face = fit([[{"meso4-f2f": p} for p in np.linspace(0.1, 0.3, 30)]], VerdictPolicy(), model="meso4-f2f",
               engines=[EngineKey(model="meso4-f2f", weights_sha256="ef" * 32)], source="cam", fps=5.0)
    with pytest.raises(BaselineError, match="a face baseline .*not a voice one"):
        check(face, tmp_path / "f.json", KEY, modality="voice")
    with pytest.raises(BaselineError, match="a voice baseline .*not a face one"):
        check(voice, tmp_path / "v.json", KEY, modality="face")
    with pytest.raises(BaselineError, match="learned with 'aasist-l'"):
        check(voice, tmp_path / "v.json", [EngineKey(model="aasist", weights_sha256=SHA)], modality="voice")
    with pytest.raises(BaselineError, match="weights"):
        check(voice, tmp_path / "v.json", [EngineKey(model="aasist-l", weights_sha256="00" * 32)],
              modality="voice")
    check(voice, tmp_path / "v.json", KEY, modality="voice")  # its own engine: accepted


# ------------------------------------------------------------------ real speech, real weights, the command line

LJ_LEARN = sorted((SPEECH / "real").glob("wavefake_LJ001-*.wav"))  # about 34 s of the LJSpeech speaker
LJ_MORE = sorted((SPEECH / "real").glob("espnet_lj_gt_LJ050-*.wav"))  # about 31 s more of her, other sentences


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    for f in AASIST_WEIGHTS.glob("*.pth"):
        os.symlink(f, folder / f.name)
    return folder


def engine_args(weights) -> list[str]:
    return ["--model", "aasist-l", "--weights-dir", str(weights), "--offline", "--device", "cpu"]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("speech")
    assert len(LJ_LEARN) == 5 and len(LJ_MORE) == 5
    return {"learn": write_wav(d / "lj-learn.wav", np.concatenate([speech_16k(f) for f in LJ_LEARN]), RATE),
            "more": write_wav(d / "lj-more.wav", np.concatenate([speech_16k(f) for f in LJ_MORE]), RATE),
            "short": write_wav(d / "lj-short.wav", speech_16k(LJ_LEARN[0])[:8 * RATE], RATE),
            "music": write_wav(d / "music.wav", melody(20.0), RATE)}


@pytest.fixture(scope="module")
def learned(tmp_path_factory, speech, weights) -> tuple:
    import contextlib
    import io

    out = tmp_path_factory.mktemp("voice-baseline") / "lj.voice.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["baseline", str(speech["learn"]), "--modality", "voice", "--allow-fake", "--out", str(out),
                     *engine_args(weights)])
    assert code == EXIT_OK, buf.getvalue()
    return out, buf.getvalue()


def scan_json(capsys, argv) -> tuple[int, list[dict]]:
    code = main(argv)
    return code, [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]


@pytest.mark.slow
def test_a_voice_bar_learned_on_real_speech_raises_no_alert_on_more_of_that_speakers_speech(learned, speech, weights,
                                                                                           capsys):
    out, printed = learned
    b = read(out)
    assert b.modality == "voice" and b.engines[0].model == "aasist-l" and b.fps == 0.5
    assert b.engines[0].weights_sha256 == "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a"
    assert b.n_eff >= 2 and b.threshold > b.policy.t_high  # a noisy voice: its bar rises above the global 0.9
    assert "voice windows" in printed and f"wrote {out}" in printed
    code, (got,) = scan_json(capsys, ["scan", str(speech["more"]), "--modality", "voice", "--baseline", str(out),
                                      "--json", *engine_args(weights)])
    assert code == EXIT_OK
    judged = got["baseline"]
    assert judged["updates"] >= 10, got  # ~31 s of speech, a window every 2 s
    assert got["label"] == "real" and judged["verdict"] != "fake" and judged["fake_at"] is None, judged
    assert judged["global_verdict"] == "fake", judged  # the global voice bar would have alerted on her


def _unchanged(path, before: bytes, capsys) -> str:
    out = capsys.readouterr()
    assert path.read_bytes() == before, "a refused baseline changed the file"
    return out.out + out.err


@pytest.mark.slow
@pytest.mark.parametrize("media, says", [("short", "too few effective samples"),
                                         ("music", "too little speech")])
def test_refused_speech_writes_nothing_and_keeps_the_old_file(learned, speech, weights, capsys, media, says):
    out, _ = learned
    keep = out.with_name(f"keep-{media}.json")
    keep.write_bytes(out.read_bytes())
    before = keep.read_bytes()
    code = main(["baseline", str(speech[media]), "--modality", "voice", "--allow-fake", "--out", str(keep),
                 *engine_args(weights)])
    assert code == EXIT_USAGE
    assert says in _unchanged(keep, before, capsys)


@pytest.mark.slow
def test_scan_refuses_a_wrong_voice_baseline_before_scoring(learned, speech, weights, capsys, tmp_path):
    out, _ = learned
    before = out.read_bytes()
    face = fit([[{"meso4-f2f": p} for p in np.linspace(0.1, 0.3, 30)]], VerdictPolicy(), model="meso4-f2f",
               engines=[EngineKey(model="meso4-f2f", weights_sha256="ef" * 32)], source="cam", fps=5.0)
    face_file = write(face, tmp_path / "face.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "dfstream-baseline", "modality": "voice", "model": ')
    other = ["--model", "aasist", "--weights-dir", str(weights), "--offline", "--device", "cpu"]
    cases = [(["--modality", "voice", "--baseline", str(face_file), *engine_args(weights)], "a face baseline"),
             (["--modality", "voice", "--baseline", str(out), *other], "learned with 'aasist-l'"),
             (["--modality", "voice", "--baseline", str(bad), *engine_args(weights)], "bad.json"),
             (["--modality", "face", "--baseline", str(out), "--weights-dir", str(weights), "--offline"],
              "a voice baseline"),
             (["--modality", "both", "--baseline", str(out), "--baseline", str(out), *engine_args(weights)],
              "a second voice baseline")]
    for argv, says in cases:
        code = main(["scan", str(speech["short"]), "--json", *argv])
        text = _unchanged(out, before, capsys)
        assert code == EXIT_USAGE and says in text, (argv, text)
        assert not any(line.startswith("{") for line in text.splitlines()), "something was scored"


@pytest.mark.slow
def test_both_writes_the_part_that_fits_and_refuses_the_other_with_its_reason(speech, tmp_path, capsys):
    """A real scene (FF++ 519 under meso4-f2f, which test_baseline_cli learns from) with music for its sound: the
    face file is written, the voice part refused for too little speech (exit 1), and its file never written."""
    from support.shared import FFPP, MESONET_WEIGHTS
    from support.sound_media import video_with_sound

    folder = tmp_path / "weights"
    folder.mkdir()
    for f in [*AASIST_WEIGHTS.glob("*.pth"), *MESONET_WEIGHTS.glob("*.h5")]:
        os.symlink(f, folder / f.name)
    clip = video_with_sound(FFPP / "real" / "519.mp4", melody(8.0), tmp_path / "519-music.mp4", seconds=8.0)
    out = tmp_path / "desk.json"
    code = main(["baseline", str(clip), "--modality", "both", "--model", "meso4-f2f", "--model", "aasist-l",
                 "--out", str(out), "--weights-dir", str(folder), "--offline", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert read(out).modality == "face" and "face: " in printed and f"wrote {out}" in printed
    assert "the voice part is refused" in printed and "too little speech" in printed
    assert not (tmp_path / "desk.voice.json").exists()
