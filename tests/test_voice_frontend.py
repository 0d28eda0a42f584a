"""The audio front end: decode + resample (PyAV) against known sines, windows, the speech gate (silero VAD).

The resampler is checked on 1 kHz sines written at 44.1 and 48 kHz (mono and stereo): after decoding to 16 kHz the
FFT peak must sit at 1 kHz and the amplitude stay 0.5. The gate is checked with the real AASIST engine: silence and
music-like tones come out `low-quality` ("no speech") and the engine is never called on them; real speech is judged.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.voice_base import AudioSpec, fit_window
from stream.live.sources import SourceError
from stream.live.voices import NoAudioTrack, SpeechDetector, VoiceScorer, decode_audio
from stream.live.voices.windows import cut_windows, window_spans
from support.voice_media import AASIST_WEIGHTS, RATE, SHARED, chord, melody, sine, speech_16k, speech_files, write_wav

FREQ, AMPLITUDE = 1000.0, 0.5
EDGE = 1600  # samples trimmed at each end before the FFT (the resampler's filter settles within them)


def peak(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """(frequency of the FFT peak, the sine amplitude) of a steady tone."""
    x = samples[EDGE:-EDGE].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()]), float(np.sqrt(2) * x.std())


@pytest.mark.parametrize("rate", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_resampler_keeps_a_sines_frequency_and_amplitude(tmp_path, rate, channels):
    path = write_wav(tmp_path / "sine.wav", sine(FREQ, 2.0, rate, AMPLITUDE), rate, channels)
    audio = decode_audio(path)
    assert audio.rate == RATE and audio.source_rate == rate and audio.source_channels == channels
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert abs(len(audio.samples) - 2 * RATE) <= 2  # 2 s stays 2 s
    freq, amplitude = peak(audio.samples, RATE)
    assert abs(freq - FREQ) <= RATE / (len(audio.samples) - 2 * EDGE)  # within one FFT bin
    assert amplitude == pytest.approx(AMPLITUDE, rel=0.01)


def test_a_file_without_audio_and_a_non_media_file_are_told_apart(tmp_path):
    video = SHARED / "data" / "ffpp-c23" / "real" / "004.mp4"
    with pytest.raises(NoAudioTrack, match="no audio track"):
        decode_audio(video)
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n")
    with pytest.raises(SourceError, match="not a readable media file") as caught:
        decode_audio(text)
    assert not isinstance(caught.value, NoAudioTrack)
    assert text.read_text() == "not audio at all\n"  # refused, untouched
    with pytest.raises(SourceError, match="no such file"):
        decode_audio(tmp_path / "missing.wav")


def test_windows_cover_a_clip_and_fill_a_short_one_as_the_authors_do():
    spec = AudioSpec(samples=100)
    assert [(w.start, w.end) for w in window_spans(250, 100, 50)] == [(0, 100), (50, 150), (100, 200), (150, 250)]
    assert [(w.start, w.end) for w in window_spans(230, 100, 50)][-1] == (130, 230)  # the tail gets a window
    assert [(w.start, w.end) for w in window_spans(40, 100, 50)] == [(0, 40)]
    x = np.arange(1, 41, dtype=np.float32)
    spans, batch = cut_windows(x, spec)
    # clovaai/aasist data_utils.pad: num_repeats = int(max_len / x_len) + 1; np.tile(x, (1, num_repeats))[:, :max_len]
    authors = np.tile(x, (1, int(100 / 40) + 1))[:, :100][0]
    assert batch.shape == (1, 100) and np.array_equal(batch[0], authors)
    assert np.array_equal(fit_window(np.arange(300, dtype=np.float32), spec), np.arange(100))  # first samples
    assert np.array_equal(fit_window(x, AudioSpec(samples=100, short="zero"))[40:], np.zeros(60))


class CountingEngine:
    """The real engine, counting the windows it is asked to judge."""

    def __init__(self, engine) -> None:
        self.engine, self.calls = engine, []
        self.name, self.spec = engine.name, engine.spec

    def predict(self, waveforms):
        self.calls.append(len(waveforms))
        return self.engine.predict(waveforms)


@pytest.fixture(scope="module")
def scorer():
    from engines.voices import build_voice_engine

    engine = CountingEngine(build_voice_engine("aasist-l", weights_dir=AASIST_WEIGHTS, allow_download=False))
    return VoiceScorer([engine], SpeechDetector()), engine


@pytest.mark.parametrize("sound", ["silence", "melody", "chord"])
def test_the_gate_never_judges_silence_or_music(scorer, sound):
    voice, engine = scorer
    samples = {"silence": np.zeros(8 * RATE), "melody": melody(8.0), "chord": chord(8.0)}[sound].astype(np.float32)
    engine.calls.clear()
    windows = voice.score(samples)
    assert len(windows) >= 3
    assert all(w.p_fake is None and w.reason.startswith("no speech") for w in windows)
    assert engine.calls == []  # never judged, not judged and discarded


def test_the_gate_lets_speech_through(scorer):
    voice, engine = scorer
    engine.calls.clear()
    samples = speech_16k(speech_files("real")[0])
    windows = voice.score(samples)
    judged = [w for w in windows if w.p_fake is not None]
    assert judged and all(0.0 <= w.p_fake <= 1.0 and w.voiced >= 0.25 for w in judged)
    assert sum(engine.calls) == len(judged)
    # Speech after silence: the silent windows stay low-quality, the speech ones are judged.
    mixed = np.concatenate([np.zeros(10 * RATE, np.float32), samples])
    windows = voice.score(mixed)
    assert windows[0].p_fake is None and windows[0].reason.startswith("no speech")
    assert windows[-1].p_fake is not None
