"""The live voice path in the real `serve` app (aiohttp, LiveService, sources, scheduler, voice thread, evidence):

1. A file with speech and a file without sound, side by side: the first's overlays carry `voice` objects judged by
   AASIST-L (the authors' published weights) and its status shows face and voice verdicts side by side; the second
   is judged on its faces (real MTCNN and MesoNet), with no `voice` object and no error.
2. A voice alert's recording keeps the sound: the recording's AAC track lasts as long as its video, and the
   evidence holds the windows the alert was raised on (JSON and WAV) under the manifest. Across a short file's
   loops too: the sound rides the stream's continuous clock, so it stays as long as the pictures.
3. An RTSP camera with a microphone (GStreamer's RTSP server sending AAC beside H.264): its overlays carry `voice`
   objects, and its recording ring holds its sound, remuxed.
"""

from __future__ import annotations

import json
import time
import wave
from pathlib import Path

import pytest

from engines.registry import DEFAULT_MODEL, build_engine
from engines.voices import build_voice_engine
from stream.config.evidence import EvidencePolicy
from stream.config.serve import ServeConfig
from stream.config.sources import SourceConfig
from stream.config.voices import VoiceConfig
from stream.messages import Alert, Overlay, Status

from support.shared import FFPP, MESONET_WEIGHTS
from support.live_server import LiveServer
from support.parts import require
from support.polling import wait_for
from support.rtsp_server import RtspServer, unavailable_reason
from support.serve_fakes import ConstantVoice, NoFaces
from support.sound_media import audio_track, speech_run, video_seconds, video_with_sound
from support.voice_media import AASIST_WEIGHTS, RATE, write_wav

VOICE_TIMEOUT_S = 120.0  # AASIST-L takes seconds per window on a loaded 2-core machine
REAL_VIDEO = FFPP / "real" / "004.mp4"


@pytest.fixture(scope="module")
def aasist_l():
    return build_voice_engine("aasist-l", weights_dir=AASIST_WEIGHTS, allow_download=False)


class Records:
    """Every record the service publishes, from its own bus."""

    def __init__(self, server: LiveServer) -> None:
        self.all: list = []
        server.service.bus.subscribe((Overlay, Status, Alert), self.all.append)

    def overlays(self, stream: str) -> list[Overlay]:
        return [r for r in list(self.all) if isinstance(r, Overlay) and r.stream == stream]

    def statuses(self, stream: str) -> list[Status]:
        return [r for r in list(self.all) if isinstance(r, Status) and r.stream == stream]

    def alerts(self) -> list[Alert]:
        return [r for r in list(self.all) if isinstance(r, Alert)]


@pytest.mark.slow
def test_a_file_with_speech_carries_voice_objects_and_a_file_without_sound_is_judged_on_faces(aasist_l, tmp_path):
    from stream.live.faces import FaceDetector

    talk = video_with_sound(REAL_VIDEO, speech_run(12.0), tmp_path / "talk.mp4", seconds=12.0)
    silent = FFPP / "real" / "519.mp4"  # FF++ clips have no audio track
    assert audio_track(silent) is None
    config = ServeConfig(port=0, data_dir=tmp_path / "data", evidence=EvidencePolicy(record=False),
                         sources=[SourceConfig(name="talk", url=str(talk), loop=True),
                                  SourceConfig(name="silent", url=str(silent), loop=True)],
                         voice=VoiceConfig(models=["aasist-l"]))
    meso = build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)
    with LiveServer(config, [meso], FaceDetector(), voice_engines=[aasist_l]) as server:
        records = Records(server)
        judged = wait_for(lambda: next((o.voice for o in records.overlays("talk")
                                        if o.voice is not None and o.voice.p_fake is not None), None),
                          VOICE_TIMEOUT_S, "a judged voice window on the speech file's overlays")
        assert 0.0 <= judged.p_fake <= 1.0 and set(judged.engines) == {"aasist-l"} and judged.voiced >= 0.25
        assert judged.end - judged.start == pytest.approx(64600 / RATE, abs=1e-3) and judged.level_db < 0
        assert all(o.to_message()["voice"]["track"] == -1 for o in records.overlays("talk")[-5:])
        # the status heartbeat comes after the judged window (one sent before it has the voice still null)
        status = wait_for(lambda: next((s for s in reversed(records.statuses("talk"))
                                        if s.verdicts and s.verdicts.voice), None),
                          30, "a status with face and voice verdicts")
        assert status.verdicts.voice in ("real", "uncertain", "fake") and status.verdicts.rule == "either"

        faces = wait_for(lambda: [o for o in records.overlays("silent") if o.faces], 60, "faces on the silent file")
        silent_overlays = records.overlays("silent")
        assert silent_overlays and all(o.voice is None and "voice" not in o.to_message() for o in silent_overlays)
        assert faces[-1].faces[0].engines.keys() == {DEFAULT_MODEL}
        source = next(s for s in server.service.scheduler.sources() if s.name == "silent")
        assert source.error is None and source.state.value == "streaming" and source.audio_chunks == 0
        assert all(s.verdicts is None for s in records.statuses("silent"))
        status, body = server.api("GET", "/api/streams")
        assert status == 200 and json.loads(body)["silent"]["state"] == "streaming"


def voice_alert_recording(tmp_path: Path, talk: Path, loop: bool, run_s: float):
    """A constant voice alert on `talk`, run `run_s` past its start, the stream removed; returns (folder, end)."""
    config = ServeConfig(port=0, data_dir=tmp_path / "data",
                         evidence=EvidencePolicy(pre_capture_s=2.0, post_capture_s=1.0, max_clip_s=30.0),
                         voice=VoiceConfig(models=["constant-voice"], hop_s=0.5))
    with LiveServer(config, [], NoFaces(), voice_engines=[ConstantVoice(0.99)]) as server:
        records = Records(server)
        server.service.add_config(SourceConfig(name="talk", url=str(talk), loop=loop))
        start = wait_for(lambda: next((a for a in records.alerts() if a.event == "start"), None), 60,
                         "the voice alert's start")
        assert start.modality == "voice" and start.track == -1 and start.evidence["snapshot"] is None
        time.sleep(run_s)  # let the recording run past the pre-roll
        assert server.service.remove("talk")  # the stream goes: the alert ends and its recording completes
        end = wait_for(lambda: next((a for a in records.alerts() if a.event == "end" and a.custody), None), 60,
                       "the voice alert's end with its custody")
    return Path(end.evidence["recording"]).parent, end


def assert_sound_spans_the_pictures(recording: Path) -> dict:
    sound, seconds = audio_track(recording), video_seconds(recording)
    assert sound is not None and sound["codec"] == "aac" and sound["rate"] == RATE and sound["peak"] > 0.05
    assert seconds > 2.0 and sound["seconds"] == pytest.approx(seconds, abs=0.3), (sound, seconds)
    return sound


@pytest.mark.slow
def test_a_voice_alerts_recording_keeps_the_sound_and_its_windows(tmp_path):
    talk = video_with_sound(REAL_VIDEO, speech_run(10.0), tmp_path / "talk.mp4", seconds=10.0)
    folder, end = voice_alert_recording(tmp_path, talk, loop=False, run_s=3.0)
    files = end.custody["files"]
    assert {"recording.mp4", "voice_windows.json", "voice_windows.wav", "overlay.json"} <= files.keys()
    assert_sound_spans_the_pictures(folder / "recording.mp4")
    assert end.custody["recording"]["audio"]["codec"] == "aac"
    windows = json.loads((folder / "voice_windows.json").read_text())
    assert windows["rate"] == RATE and windows["windows"] and all(w["p_fake"] == pytest.approx(0.99)
                                                                   for w in windows["windows"] if w["p_fake"])
    with wave.open(str(folder / "voice_windows.wav")) as wav:
        assert wav.getframerate() == RATE and wav.getnframes() == RATE * len(windows["windows"])


@pytest.mark.slow
def test_a_voice_alerts_recording_across_a_files_loops_keeps_its_sound_in_step(tmp_path):
    talk = video_with_sound(REAL_VIDEO, speech_run(3.0), tmp_path / "talk.mp4", seconds=3.0)
    folder, end = voice_alert_recording(tmp_path, talk, loop=True, run_s=7.0)
    breaks = end.custody["recording"]["discontinuities"]
    assert breaks and all(b["reason"] == "new connection" for b in breaks), breaks  # it did span the loops
    assert_sound_spans_the_pictures(folder / "recording.mp4")


@pytest.mark.slow
def test_an_rtsp_camera_with_a_microphone_carries_voice_objects(aasist_l, tmp_path):
    require("GStreamer's RTSP server", unavailable_reason())
    mic = write_wav(tmp_path / "mic.wav", speech_run(12.0), RATE)
    with RtspServer(REAL_VIDEO, audio=mic) as camera:
        config = ServeConfig(port=0, data_dir=tmp_path / "data", voice=VoiceConfig(models=["aasist-l"]),
                             sources=[SourceConfig(name="door", url=camera.url)])
        with LiveServer(config, [], NoFaces(), voice_engines=[aasist_l]) as server:
            records = Records(server)
            judged = wait_for(lambda: next((o.voice for o in records.overlays("door")
                                            if o.voice is not None and o.voice.windows > 0), None),
                              VOICE_TIMEOUT_S, "a scored voice window on the camera's overlays")
            assert judged.p_fake is not None and judged.voiced >= 0.25, judged  # the camera's speech, judged
            ring = wait_for(lambda: next((s.source.ring for s in reversed(records.statuses("door"))
                                          if s.source and s.source.ring and "audio" in s.source.ring), None),
                            30, "the camera's sound in its recording ring")
            assert ring["audio"]["codec"] == "aac" and ring["audio"]["mode"] == "remux"
            assert ring["audio"]["rate"] == RATE
