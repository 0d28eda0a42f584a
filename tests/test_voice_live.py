"""The live voice path's parts, without a server: the audio ring, the feed that resamples a source's sound into it,
WebRTC's audio clock, the voice thread's pacing (newest window, skip when behind, longest-waiting first), its speech
gate, the voice verdict and its alerts, the messages, the stream rule, and the settings it refuses.

The speech gate is the real silero VAD and the sound is the shared speech (../shared/data/speech); the voice engine
is a stand-in with a fixed p(fake) (`Constant`), because these tests are about what is scored when and what the
verdict and the alert do with a score, not about a detector's opinion (tests/test_voice_serve.py runs AASIST-L).
"""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np
import pytest
from pydantic import ValidationError

from engines.voice_base import VoiceEngine
from stream.config.serve import ConfigError, ServeConfig, load_config
from stream.config.voices import VoiceConfig
from stream.live.sources import AudioChunk
from stream.live.sources.webrtc import AudioClock
from stream.live.verdicts.alerts import AlertManager
from stream.live.verdicts.streams import side_by_side, stream_verdict
from stream.live.voices.feed import AudioFeed
from stream.live.voices.ring import SILENT_DB, AudioRing
from stream.messages import (VOICE_TRACK, Alert, Overlay, SchedulerStatus, SourceStatus, Status, StreamVerdicts,
                             VoiceOverlay)

from support.serve_fakes import ConstantVoice as Constant, Idle
from support.sound_media import speech_run
from support.voice_media import RATE, melody

WINDOW = RATE  # the stand-in engine's window: 1 s, so the tests need little sound


def chunks(samples: np.ndarray, t0: float, rate: int = RATE, size: int = 320):
    """`samples` (mono float) as a source hands them on: 20 ms AudioChunks from stream time `t0`."""
    for i in range(0, len(samples), size):
        part = np.ascontiguousarray(samples[i:i + size], np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(part, format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
        yield AudioChunk(frame, t0 + i / rate, time.monotonic())


def play(source: Idle, samples: np.ndarray, t0: float = 0.0) -> float:
    """Deliver `samples` through the source's audio taps; returns the stream time after them."""
    for chunk in chunks(samples, t0):
        source.deliver_audio(chunk)
    return t0 + len(samples) / RATE


# --- the ring and the feed -----------------------------------------------------------------------------------------

def test_the_ring_keeps_the_newest_samples_in_order_in_fixed_memory():
    ring = AudioRing(1000, RATE)
    buffer = ring.storage
    x = np.arange(2500, dtype=np.float32) / 2500
    for i in range(0, 2500, 333):  # writes that wrap around the end, unaligned
        ring.write(x[i:i + 333], end=(min(i + 333, 2500)) / RATE, arrived=time.monotonic())
    assert ring.latest(1001) is None  # more than it can hold
    snap = ring.latest(1000)
    assert np.array_equal(snap.samples, x[-1000:]) and snap.total == 2500 and snap.end == pytest.approx(2500 / RATE)
    assert ring.storage is buffer and ring.storage.nbytes == 4000  # preallocated: never grows
    ring.write(np.full(1500, 0.5, np.float32), end=1.0, arrived=time.monotonic())  # longer than the ring: its tail
    assert np.array_equal(ring.latest(1000).samples, np.full(1000, 0.5, np.float32)) and ring.total == 4000

    young = AudioRing(100, RATE)
    assert young.level_db() is None and young.latest(10) is None
    young.write(np.zeros(50, np.float32), end=0.1, arrived=0.0)
    assert young.latest(60) is None and young.level_db() == SILENT_DB
    loud = AudioRing(RATE, RATE)
    loud.write(np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE).astype(np.float32), end=1.0, arrived=0.0)
    assert loud.level_db() == pytest.approx(-3.01, abs=0.05)  # a full-scale sine's RMS


def test_a_feed_turns_48k_stereo_chunks_into_16k_mono_on_the_streams_clock():
    ring = AudioRing(2 * RATE, RATE)
    feed = AudioFeed(ring)
    rate, n = 48000, 960  # aiortc's chunks: 20 ms of 48 kHz s16 stereo
    t = np.arange(rate) / rate
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), np.zeros(rate)  # a tone on the left only
    pcm = (np.stack([left, right], axis=1) * 32767).round().astype("<i2")
    for k in range(rate // n):
        frame = av.AudioFrame.from_ndarray(pcm[k * n:(k + 1) * n].reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, k * n, Fraction(1, rate)
        feed(AudioChunk(frame, 10.0 + k * n / rate, time.monotonic()))
    assert ring.end == pytest.approx(11.0, abs=1e-6)  # the last chunk's end, on the stream's clock
    snap = ring.latest(12000)  # 0.75 s (the resampler holds back a few ms)
    spectrum = np.abs(np.fft.rfft(snap.samples * np.hanning(len(snap.samples))))
    assert np.fft.rfftfreq(len(snap.samples), 1 / RATE)[spectrum.argmax()] == pytest.approx(440, abs=2)
    # the channels are averaged (as the offline decoder does): a tone on one channel at 0.5 is 0.25 in mono
    assert np.sqrt(np.mean(snap.samples[2000:] ** 2)) == pytest.approx(0.25 / np.sqrt(2), rel=0.02)
    # another format, rate and layout (a reconnect, another microphone) gets a resampler of its own
    mono16 = next(chunks(np.full(320, 0.1, np.float32), 11.0))
    feed(mono16)
    assert ring.latest(100).samples[-50:] == pytest.approx(np.full(50, 0.1), abs=0.02)


def test_webrtc_audio_is_put_on_the_video_clock_once_a_picture_has_come():
    clock = AudioClock()
    assert clock.to_video(123.0, now=50.0) is None  # no picture yet: nothing to line up with
    clock.picture(7000.0, arrived=49.5)  # a picture at video time 7000 s arrived 0.5 s ago
    assert clock.to_video(123.0, now=50.0) == pytest.approx(7000.5)
    assert clock.to_video(124.0, now=99.0) == pytest.approx(7001.5)  # then the audio's own spacing, not arrival


# --- the voice thread ----------------------------------------------------------------------------------------------

def loop_with(engine: VoiceEngine, alerts: AlertManager | None = None, **voice):
    from stream.live.voices.live import VoiceLoop

    config = VoiceConfig(models=[engine.name], **({"hop_s": 0.5} | voice))
    return VoiceLoop([engine], config, alerts)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speech_run(6.0)


def test_the_voice_thread_scores_the_newest_window_and_skips_when_behind(speech):
    engine = Constant(0.2)
    voices = loop_with(engine)
    source = Idle("call")
    voices.attach(source)
    t = play(source, speech[:8000])  # half a window
    assert voices.step(time.monotonic()) == 0 and not engine.batches
    listening = voices.overlay("call")
    assert listening.verdict == "low-quality" and listening.reason.startswith("listening: 0.5 of 1.0 s")
    t = play(source, speech[8000:17600], t)  # a full window, and a bit
    assert voices.step(time.monotonic()) == 1
    np.testing.assert_allclose(engine.batches[-1][0], speech[17600 - WINDOW:17600], atol=1e-6)  # the newest second
    assert voices.step(time.monotonic()) == 0  # no hop of new sound yet
    t = play(source, speech[17600:17600 + 3 * 8000], t)  # three hops: the scorer fell behind
    assert voices.step(time.monotonic()) == 1 and len(engine.batches) == 2
    np.testing.assert_allclose(engine.batches[-1][0], speech[17600 + 3 * 8000 - WINDOW:17600 + 3 * 8000], atol=1e-6)
    v = voices.overlay("call")
    assert (v.windows, v.skipped) == (2, 2)  # the two hops in between were passed over, and counted
    assert v.end == pytest.approx(t) and v.start == pytest.approx(t - 1.0) and v.p_fake == pytest.approx(0.2)


def test_the_longest_waiting_streams_go_first_and_a_pass_is_bounded(speech, monkeypatch):
    from stream.live.voices import live

    monkeypatch.setattr(live, "STREAMS_PER_PASS", 2)
    engine = Constant(0.2)
    voices = loop_with(engine)
    sources = [Idle(n) for n in ("a", "b", "c")]
    for s in sources:
        voices.attach(s)
        play(s, speech[:WINDOW])
    assert voices.step(1.0) == 2 and len(engine.batches[-1]) == 2  # one batch for the two streams of the pass
    assert voices.step(2.0) == 1  # "c" had waited longest: its turn; "a" and "b" have no new hop
    assert [voices.overlay(n).windows for n in "abc"] == [1, 1, 1]
    for s in sources:
        play(s, speech[WINDOW:WINDOW + 8000], 1.0)
    assert voices.step(3.0) == 2
    assert [voices.overlay(n).windows for n in "abc"] == [2, 2, 1]


def test_windows_without_speech_are_low_quality_and_never_judged(speech):
    engine = Constant(0.99)
    published: list = []
    voices = loop_with(engine, AlertManager(published.append))
    source = Idle("room")
    voices.attach(source)
    t = play(source, np.zeros(WINDOW, np.float32))
    assert voices.step(1.0) == 1
    silent = voices.overlay("room")
    assert silent.verdict == "low-quality" and silent.reason.startswith("no speech") and silent.p_fake is None
    t = play(source, (0.5 * melody(1.0)).astype(np.float32), t)  # music: not a voice either
    assert voices.step(2.0) == 1
    assert voices.overlay("room").reason.startswith("no speech")
    assert not engine.batches and not published  # never given to the engine, no verdict, no alert
    assert voices.verdict("room") is None
    play(source, speech[:WINDOW], t)
    assert voices.step(3.0) == 1 and len(engine.batches) == 1 and voices.overlay("room").p_fake == pytest.approx(0.99)


def test_a_fake_voice_raises_a_voice_alert_with_its_windows_and_ends_it(speech, tmp_path):
    from stream.live.evidence.names import EvidenceLayout

    published: list = []
    voices = loop_with(Constant(0.99), AlertManager(published.append, layout=EvidenceLayout(tmp_path)))
    source = Idle("call")
    voices.attach(source)
    t = 0.0
    for k in range(3):  # k = 2 for voices: fake after two judged windows
        t = play(source, speech[k * WINDOW:(k + 1) * WINDOW], t)
        voices.step(float(k))
    alerts = [r for r in published if isinstance(r, Alert)]
    assert [a.event for a in alerts] == ["start"]
    start = alerts[0]
    assert start.modality == "voice" and start.track == VOICE_TRACK
    assert start.engines == {"constant-voice": pytest.approx(0.99)}
    assert start.to_message()["modality"] == "voice" and "sound" not in start.to_message()
    assert start.evidence["snapshot"] is None and start.evidence["voice_windows"].endswith("voice_windows.json")
    heard = start.sound.windows  # in process: the windows it was raised on, their sound and scores
    assert [w.p_fake for w in heard] == [pytest.approx(0.99)] * 2 and heard[-1].end == pytest.approx(2.0)
    np.testing.assert_allclose(heard[-1].samples, speech[WINDOW:2 * WINDOW], atol=1e-6)
    assert start.at == pytest.approx(2.0)  # the judged window's end, on the stream's clock
    assert voices.overlay("call").verdict == "fake" and voices.verdict("call") == "fake"

    t = play(source, np.zeros(WINDOW, np.float32), t)  # silence: low-quality, the alert stays open
    voices.step(10.0)
    assert [a.event for a in published if isinstance(a, Alert)] == ["start"]
    voices.detach("call")  # the stream goes: its voice alert ends, and nothing of it is judged after
    assert [a.event for a in published if isinstance(a, Alert)] == ["start", "end"]
    play(source, speech[:WINDOW], t)
    assert voices.step(11.0) == 0 and voices.overlay("call") is None


def test_lost_sound_ends_the_voice_alert_and_the_verdict_starts_afresh(speech):
    published: list = []
    voices = loop_with(Constant(0.99), AlertManager(published.append), lost_after_s=5.0)
    source = Idle("cam")
    voices.attach(source)
    for k in range(2):
        play(source, speech[k * WINDOW:(k + 1) * WINDOW], float(k))
        voices.step(time.monotonic())
    assert [a.event for a in published if isinstance(a, Alert)] == ["start"]
    voices.step(time.monotonic() + 6.0)  # no sound for longer than lost_after_s
    assert [a.event for a in published if isinstance(a, Alert)] == ["start", "end"]
    lost = voices.overlay("cam")
    assert lost.verdict == "low-quality" and lost.reason == "no sound for over 5 s" and voices.verdict("cam") is None


def test_the_faces_only_rule_judges_the_voice_but_never_alerts(speech):
    published: list = []
    voices = loop_with(Constant(0.99), AlertManager(published.append), rule="faces-only")
    source = Idle("cam")
    voices.attach(source)
    for k in range(3):
        play(source, speech[k * WINDOW:(k + 1) * WINDOW], float(k))
        voices.step(float(k))
    assert voices.verdict("cam") == "fake" and not published


# --- messages and the stream's rule --------------------------------------------------------------------------------

def test_overlays_carry_a_voice_object_only_for_streams_with_sound():
    base = dict(stream="s", pts=1, time=0.5, frame_size=(640, 480), latency_ms=12.0, faces=(), verdict=None)
    assert "voice" not in Overlay(**base).to_message()  # a face-only stream's overlay is as before
    voice = VoiceOverlay(track=VOICE_TRACK, p_fake=0.91234567, engines={"aasist": 0.91234567}, score=0.8,
                         verdict="uncertain", reason=None, start=1.23456, end=5.27456, voiced=0.6, level_db=-23.456,
                         windows=3, skipped=1)
    msg = Overlay(**base, voice=voice).to_message()["voice"]
    assert msg == {"track": -1, "p_fake": 0.9123, "engines": {"aasist": 0.9123}, "score": 0.8,
                   "verdict": "uncertain", "reason": None, "start": 1.235, "end": 5.275, "voiced": 0.6,
                   "level_db": -23.5, "windows": 3, "skipped": 1}


def test_alerts_say_their_modality_and_old_messages_read_as_faces():
    alert = Alert(event="start", id="a" * 32, seq=1, stream="s", track=VOICE_TRACK, started_at=1.0, ended_at=None,
                  score_max=0.95, engines={"aasist": 0.95}, evidence={}, modality="voice")
    assert Alert.from_message(alert.to_message()) == alert
    old = alert.to_message()
    del old["modality"]  # written before voices
    assert Alert.from_message(old).modality == "face"


def test_the_status_shows_face_and_voice_verdicts_side_by_side():
    source = SourceStatus("streaming", "x", 25.0, 10, 0, 0, None, (640, 480))
    sched = SchedulerStatus(5.0, 5.0, {"p50": 1.0, "p95": 2.0}, False, 1, {})
    assert "verdicts" not in Status("s", source=source, scheduler=sched).to_message()
    both = Status("s", source=source, scheduler=sched, verdicts=side_by_side("real", "fake", "either"))
    assert both.to_message()["verdicts"] == {"face": "real", "voice": "fake", "stream": "fake", "rule": "either"}
    assert side_by_side("fake", "real", "faces-only") == StreamVerdicts("fake", "real", "fake", "faces-only")


@pytest.mark.parametrize(("face", "voice", "rule", "want"), [
    ("real", "fake", "either", "fake"), ("fake", "real", "either", "fake"), ("real", "uncertain", "either", "uncertain"),
    (None, "real", "either", "real"), ("real", None, "either", "real"), (None, None, "either", None),
    ("real", "fake", "faces-only", "real"), (None, "fake", "faces-only", None)])
def test_the_stream_rule(face, voice, rule, want):
    assert stream_verdict(face, voice, rule) == want


# --- refusals ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("voice", "words"), [
    ({"hop_s": 0}, "hop_s"), ({"rule": "both"}, "rule"), ({"threads": 0}, "threads"),
    ({"speech": {"min_voiced_fraction": 0}}, "min_voiced_fraction"), ({"modles": ["aasist"]}, "modles"),
    ({"verdict": {"t_low": 0.95, "t_high": 0.9}}, "t_low")])
def test_bad_voice_settings_are_refused_by_name(tmp_path, voice, words):
    path = tmp_path / "serve.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"voice": voice}))
    before = path.read_text()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert words in str(err.value)
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["serve.yaml"]
    with pytest.raises(ValidationError):
        VoiceConfig(**voice)


def test_serve_takes_voice_models_from_model_too():
    from stream.cli.serve import split_models

    assert split_models(["meso4-f2f", "aasist-l"], None) == (["meso4-f2f"], ["aasist-l"])
    assert split_models(["aasist"], ["aasist-l"]) == (None, ["aasist-l", "aasist"])
    assert split_models(["meso4-df"], None) == (["meso4-df"], None)
    assert split_models(None, ["aasist"]) == (None, ["aasist"])
    assert ServeConfig().voice.models == []  # no voice model named: sound is neither decoded nor judged


@pytest.mark.parametrize(("model", "words"), [("meso4-f2f", "is a face model"), ("no-such-voice", "unknown model")])
def test_serve_refuses_a_voice_model_that_is_not_one_and_starts_nothing(tmp_path, capsys, model, words):
    from stream.cli import EXIT_USAGE, main

    data = tmp_path / "data"
    code = main(["serve", "--voice-model", model, "--data-dir", str(data), "--offline", "--port", "0",
                 "--weights-dir", str(tmp_path / "no-weights")])
    assert code == EXIT_USAGE
    assert words in capsys.readouterr().err
    assert not data.exists()  # refused before the service made its data folder, log or evidence
