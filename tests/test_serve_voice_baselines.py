"""Voice baselines in `serve`, on the real app (aiohttp, LiveService, scheduler, voice thread, judges), with the
stand-ins of test_serve_baselines.py for pictures and a cycling stand-in for the voice engine, on real speech
(the shared LJSpeech recordings through the real silero speech gate) and on music.

- One POST learns the face bar and, where the voice path listens, the voice bar, from the same seconds: both
  saved (`NAME.json`, `NAME.voice.json`), both in the status side by side, the voice's progress in windows.
- A part the footage cannot vouch for is refused with its reason while the other is saved: too little speech
  (music) with faces, low-quality faces with speech, no sound at all; both refused: 422 and nothing saved.
- After a restart the learned voice bar judges the stream's voice: no voice alert on its speech, while a stream
  with the same voice and no bar turns fake at the global voice bar.
- A source's `voice_baseline:` that does not fit (a face file, no voice engines) is refused at start.
"""

from __future__ import annotations

import json
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from engines.voice_base import AudioSpec, VoiceEngine
from stream.config.serve import ServeConfig
from stream.config.sources import SourceConfig
from stream.config.voices import VOICE_VERDICT, VoiceConfig
from stream.live.server.baselines import BASELINES_DIR, bars_for, check_sources
from stream.live.sources import AudioChunk, Frame
from stream.live.verdicts.baseline import BaselineError, read
from stream.messages import Alert

from support.live_server import LiveServer
from support.polling import wait_for
from support.serve_fakes import OneFace, add_source
from support.sound_media import speech_run
from support.voice_media import RATE, melody
from test_serve_baselines import Brightness, Tinted

VOICE_SHA = "5e" * 32
LEARN_S = 5.0  # a window every 0.5 s: ~10 windows, 3 blocks of 3 (2 needed); 50 faces at 10 fps
LEARNED = (0.92, 0.97)  # above the global voice bar (0.9): a "noisy" voice the global bar calls fake
LATER = (0.905, 0.915)  # more of that voice after a restart: above the global bar, below what was learned


class Cycling(VoiceEngine):
    """p(fake) of a window in [lo, hi], set by the window's own samples (1 s windows at 16 kHz), so a stream's
    windows vary whatever else is batched with them. The learning server scores in LEARNED; the restarted one in
    LATER, above the global voice bar (0.9) and below every level learned, so below any bar learned from them."""

    def __init__(self, lo: float = LEARNED[0], hi: float = LEARNED[1]) -> None:
        self.name, self.spec, self.weights_sha256 = "cycling-voice", AudioSpec(samples=RATE), VOICE_SHA
        self.lo, self.hi = lo, hi

    def predict(self, waveforms: np.ndarray) -> np.ndarray:
        self.check_batch(waveforms)
        spread = [(abs(float(w.sum())) * 1000) % 1.0 for w in waveforms]
        return np.array([self.lo + (self.hi - self.lo) * f for f in spread], np.float32)


SPEECH = speech_run(40.0)
MUSIC = melody(40.0)


class Sounding(Tinted):
    """Tinted pictures with sound: 50 ms of `samples` (cycled) with every frame; None: no sound at all."""

    def __init__(self, name: str, lo: int, hi: int, samples: np.ndarray | None) -> None:
        super().__init__(name, lo, hi)
        self.samples = samples

    def _run(self) -> None:
        rng = np.random.default_rng(abs(hash(self.name)) % 2**32)
        i, step = 0, RATE // 20
        while not self._stop.wait(1.0 / self.fps):
            image = rng.integers(self.lo, self.hi + 1, (96, 128, 3), dtype=np.uint8)
            self.deliver(Frame(image, pts=i, time=i / self.fps, index=i, received=time.monotonic()))
            if self.samples is not None:
                at = (i * step) % (len(self.samples) - step)
                part = np.ascontiguousarray(self.samples[at:at + step], np.float32)[None, :]
                frame = av.AudioFrame.from_ndarray(part, format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = RATE, i * step, Fraction(1, RATE)
                self.deliver_audio(AudioChunk(frame, i * step / RATE, time.monotonic()))
            i += 1


STREAMS = {"talk": (0, 50, SPEECH), "control": (0, 50, SPEECH), "hum": (0, 50, MUSIC), "mute": (0, 50, None),
           "flat-talk": (30, 30, SPEECH), "flat-hum": (30, 30, MUSIC)}
VOICE = VoiceConfig(hop_s=0.5, lost_after_s=30.0, verdict=VOICE_VERDICT.model_copy(update={
    "baseline": VOICE_VERDICT.baseline.model_copy(update={"learn_on_fake": True})}))


def start(data_dir: Path, names, voice: tuple[float, float] = LEARNED) -> LiveServer:
    config = ServeConfig(port=0, data_dir=data_dir, voice=VOICE)
    server = LiveServer(config, [Brightness()], OneFace(), voice_engines=[Cycling(*voice)]).__enter__()
    for name in names:
        lo, hi, samples = STREAMS[name]
        add_source(server, Sounding(name, lo, hi, samples))
    return server


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("voice-baselines-data")


@pytest.fixture(scope="module")
def learned(data_dir):
    """One server: every stream learns at once (one POST each, in parallel); their answers, and GETs meanwhile."""
    server = start(data_dir, [n for n in STREAMS if n != "control"])
    try:
        answers: dict = {}
        seen: list = []

        def post(name: str) -> None:
            answers[name] = server.api("POST", f"/api/streams/{name}/baseline", {"seconds": LEARN_S})

        posts = [threading.Thread(target=post, args=(n,)) for n in STREAMS if n != "control"]
        for t in posts:
            t.start()
        while any(t.is_alive() for t in posts):
            seen.append(json.loads(server.api("GET", "/api/streams/talk/baseline")[1]))
            time.sleep(0.5)
        for t in posts:
            t.join()
        statuses = server.service.statuses()
        yield answers, seen, statuses
    finally:
        server.__exit__(None, None, None)


def folder(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / BASELINES_DIR).glob("*"))


def test_one_post_learns_the_face_and_the_voice_bar_and_shows_both(learned, data_dir):
    answers, seen, statuses = learned
    status, text = answers["talk"]
    assert status == 201, text
    got = json.loads(text)
    assert got["bar"]["modality"] == "face" and got["error"] is None
    voice = got["voice"]
    assert voice["error"] is None and voice["bar"]["modality"] == "voice" and voice["bar"]["faces"] >= 6, voice
    assert voice["bar"]["threshold"] > VOICE.verdict.t_high  # the noisy voice's bar rose above the global one
    saved = read(data_dir / BASELINES_DIR / "talk.voice.json")
    assert saved.modality == "voice" and saved.engines[0].weights_sha256 == VOICE_SHA and saved.fps == 2.0
    assert read(data_dir / BASELINES_DIR / "talk.json").modality == "face"
    learning = [s["voice"]["learning"] for s in seen if s.get("voice", {}).get("learning")]
    assert learning and max(x["windows"] for x in learning) >= 3, seen  # the progress counts voice windows
    shown = statuses["talk"]["baseline"]
    assert shown["bar"]["modality"] == "face" and shown["voice"]["bar"]["threshold"] == voice["bar"]["threshold"]


@pytest.mark.parametrize("name, face, voice", [("hum", None, "too little speech"),
                                               ("mute", None, "had no sound"),
                                               ("flat-talk", "low-quality", None)])
def test_a_part_that_cannot_vouch_is_refused_with_its_reason_and_the_other_is_saved(learned, data_dir, name, face,
                                                                                  voice):
    answers, _, statuses = learned
    status, text = answers[name]
    assert status == 201, text
    got = json.loads(text)
    files = folder(data_dir)
    if face is None:
        assert got["bar"] is not None and f"{name}.json" in files
    else:
        assert got["bar"] is None and face in got["error"] and f"{name}.json" not in files
    if voice is None:
        assert got["voice"]["bar"] is not None and f"{name}.voice.json" in files
    else:
        assert got["voice"]["bar"] is None and voice in got["voice"]["error"] and f"{name}.voice.json" not in files
        assert voice in statuses[name]["baseline"]["voice"]["error"]  # and the status says so


def test_both_parts_refused_answers_422_and_saves_nothing(learned, data_dir):
    answers, _, statuses = learned
    status, text = answers["flat-hum"]
    assert status == 422 and "low-quality" in text and "too little speech" in text, text
    assert not [f for f in folder(data_dir) if f.startswith("flat-hum")]
    assert statuses["flat-hum"]["baseline"]["bar"] is None and statuses["flat-hum"]["baseline"]["voice"]["bar"] is None


@pytest.mark.slow  # over 6 s in the fast tier (pytest --fast --durations=30, 2026-12-08)
def test_after_a_restart_the_learned_voice_bar_raises_no_alert_where_the_global_bar_does(learned, data_dir):
    server = start(data_dir, ["talk", "control"], voice=LATER)
    try:
        alerts: list[Alert] = []
        server.service.bus.subscribe(Alert, alerts.append)
        voices = server.service.voices
        bars = server.service.baselines.bars
        assert wait_for(lambda: bars.voice.get("talk"), timeout=10, what="talk's voice bar").origin == "learned"
        wait_for(lambda: voices.verdict("control") == "fake", timeout=60, what="the control voice turns fake")
        wait_for(lambda: (o := voices.overlay("talk")) is not None and o.windows >= 12, timeout=60,
                 what="a dozen windows of the learned stream")
        assert voices.verdict("talk") != "fake"
        assert not [a for a in alerts if a.stream == "talk"], alerts
        assert [a for a in alerts if a.stream == "control" and a.modality == "voice"]
    finally:
        server.__exit__(None, None, None)


def test_a_voice_baseline_that_does_not_fit_is_refused_at_start(learned, data_dir):
    face_file, voice_file = data_dir / BASELINES_DIR / "talk.json", data_dir / BASELINES_DIR / "talk.voice.json"
    cases = [(face_file, [Cycling()], "a face baseline"), (voice_file, [], "no voice engines run"),
             (voice_file, [Other()], "learned with 'cycling-voice'")]
    for path, voice_engines, says in cases:
        config = ServeConfig(port=0, data_dir=data_dir, voice=VOICE,
                             sources=[SourceConfig(name="cam", url="x.mp4", voice_baseline=path)])
        with pytest.raises(BaselineError, match=says):
            check_sources(config, bars_for(config, [Brightness()], None, voice_engines))
    config = ServeConfig(port=0, data_dir=data_dir, voice=VOICE.model_copy(update={"hop_s": 1.0}),
                         sources=[SourceConfig(name="cam", url="x.mp4", voice_baseline=voice_file)])
    with pytest.raises(BaselineError, match="voice.hop_s"):
        check_sources(config, bars_for(config, [Brightness()], None, [Cycling()]))


def test_a_learned_voice_file_for_other_weights_is_not_used_and_the_status_says_why(learned, data_dir):
    talk = json.loads((data_dir / BASELINES_DIR / "talk.voice.json").read_text())
    talk["engines"][0]["weights_sha256"] = "00" * 32
    stale = data_dir / BASELINES_DIR / "control.voice.json"
    stale.write_text(json.dumps(talk))
    before = stale.read_bytes()
    server = start(data_dir, ["control"])
    try:
        said = wait_for(lambda: ((server.service.statuses()["control"].get("baseline") or {}).get("voice") or {})
                        .get("error"), timeout=10, what="the refusal in control's status")
        assert server.service.baselines.bars.voice.get("control") is None  # judged at the global voice bar
        assert "not used" in said and "weights" in said, said
        assert stale.read_bytes() == before  # kept on disk, as a face file is
    finally:
        server.__exit__(None, None, None)
        stale.unlink()


def test_delete_forgets_the_face_and_the_voice_bar(learned, data_dir):
    server = start(data_dir, ["talk"])
    try:
        bars = server.service.baselines.bars
        wait_for(lambda: bars.get("talk") and bars.voice.get("talk"), timeout=10, what="talk's bars loaded")
        status, text = server.api("DELETE", "/api/streams/talk/baseline")
        assert status == 200, text
        got = json.loads(text)
        assert got["bar"] is None and got["voice"]["bar"] is None and got["voice"]["global"]["t_high"] == 0.9
        assert bars.voice.get("talk") is None and bars.voice.policy_for("talk").t_high == VOICE.verdict.t_high
        assert not [f for f in folder(data_dir) if f.startswith("talk.")]
    finally:
        server.__exit__(None, None, None)


class Other(Cycling):
    def __init__(self) -> None:
        super().__init__()
        self.name = "other-voice"
