"""Face quality and the low-quality gate: a face below its engines' floor is said to be low-quality, in words,
and never counts toward a verdict or an alert, whatever its score."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from engines.base import Engine, InputSpec
from engines.quality import QualityFloor
from stream.config.verdicts import AlertPolicy, VerdictPolicy
from stream.live.faces import FaceDetector
from stream.live.faces.quality import FaceQuality, face_px, sharpness
from stream.live.scheduler.loop import Scheduler
from stream.live.rings import CropRing
from stream.live.scheduler.track import EVIDENCE_CROP, EVIDENCE_FRAMES, Track
from stream.live.scoring import Scorer
from stream.live.sources import AVSource
from stream.live.sources.buffer import LatestFrameBuffer
from stream.live.sources.live import StreamSource
from stream.live.verdicts.alerts import AlertManager
from stream.live.verdicts.judge import Judge

from support.shared import FFPP

TWITCHY = VerdictPolicy(smoothing="ema", ema_alpha=1.0, t_high=0.7, t_low=0.3, k=1)  # one frame decides


class _Sure(Engine):
    """Calls every face fake with p = 0.99: only the gate can keep it from raising an alert."""

    def __init__(self, floor: QualityFloor, name: str = "sure") -> None:
        self.name, self.spec, self.quality = name, InputSpec(size=64), floor

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return np.full(len(crops), 0.99, dtype=np.float32)


class _Feed(StreamSource):
    def __init__(self, name: str) -> None:
        super().__init__(name, name, LatestFrameBuffer(), 1000.0)

    def start(self):
        pass

    def stop(self):
        pass


def test_sharpness_falls_with_blur_and_face_px_is_the_short_side(ffpp_face_crops):
    crop = ffpp_face_crops(128, 0.0)[0]
    blurred = np.asarray(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(3)))
    assert sharpness(crop) > 3 * sharpness(blurred) > 0
    assert sharpness(np.zeros_like(crop)) == 0.0
    assert face_px(np.array([10.0, 20.0, 110.0, 70.0])) == 50.0


def test_gate_names_the_engine_and_the_floor_in_words():
    scorer = Scorer([_Sure(QualityFloor(min_face_px=128), "meso4-df"), _Sure(QualityFloor(min_sharpness=50), "b")])
    small = scorer.gate(FaceQuality(face_px=86, sharpness=10))
    assert small.low_quality and small.reason == "face 86 px < 128 px for meso4-df; sharpness 10 < 50 for b"
    half = scorer.gate(FaceQuality(face_px=86, sharpness=80))
    assert not half.low_quality and half.trusted == {"b"} and half.keep({"meso4-df": 0.9, "b": 0.2}) == {"b": 0.2}
    assert scorer.gate(FaceQuality(face_px=200, sharpness=80)).trusted == {"meso4-df", "b"}


def test_a_low_quality_face_leaves_verdict_and_alerts_untouched():
    msgs = []
    judge = Judge(TWITCHY, AlertManager(msgs.append, AlertPolicy()))
    state = judge.new_verdict()
    scorer = Scorer([_Sure(QualityFloor(min_face_px=128))])
    gate = scorer.gate(FaceQuality(face_px=60, sharpness=100))
    track = Track(1, "cam", scorer.window_rings(1), state, CropRing(EVIDENCE_FRAMES, EVIDENCE_CROP[0]),
                  scores={"sure": 0.99}, gate=gate)
    for _ in range(5):
        j = judge.judge(track)
        assert j.verdict == "low-quality" and "60 px < 128 px" in j.reason
    assert state.verdict == "uncertain" and state.smoothed is None and not state.history and msgs == []


@pytest.fixture(scope="module")
def frames():
    source = AVSource(FFPP / "fake" / "Deepfakes_519_515.mp4", sample_fps=5)
    out = []
    for frame in source.frames():
        out.append(frame)
        if len(out) == 6:
            break
    source.close()
    return out


@pytest.mark.parametrize("floor_px, alerts_expected", [(10_000, False), (0, True)], ids=["gated", "control"])
def test_a_face_below_the_floor_never_starts_an_alert_even_at_p_099(frames, floor_px, alerts_expected):
    msgs = []
    engine = _Sure(QualityFloor(min_face_px=floor_px))
    publish = lambda record: msgs.append(record.to_message())  # noqa: E731 - what leaves the process
    sched = Scheduler(FaceDetector(), [engine], publish, policy=TWITCHY, alerts=AlertManager(publish, AlertPolicy()))
    st = sched.add(_Feed("cam"))
    for frame in frames:
        sched.process([(st, frame)])
    faces = [f for m in msgs if m["type"] == "overlay" for f in m["faces"]]
    assert faces and all(f["quality"]["face_px"] > 50 and f["quality"]["sharpness"] > 0 for f in faces)
    alerts = [m for m in msgs if m["type"] == "alert"]
    if alerts_expected:
        assert alerts and all(f["verdict"] == "fake" and f["reason"] is None for f in faces)
    else:
        assert not alerts
        assert all(f["verdict"] == "low-quality" and "< 10000 px for sure" in f["reason"] for f in faces)
        sched.publish_status()
        status = next(m for m in msgs if m["type"] == "status")
        assert status["gated_faces"] == len(faces)


def test_serve_and_scan_share_the_measured_default_model():
    from engines.auto import AUTO, FALLBACK_RANKING
    from engines.registry import DEFAULT_MODEL, get_entry
    from stream.config.serve import ServeConfig

    # serve's default is `auto`, whose offline fallback is the measured default model (the one scan falls back to)
    assert ServeConfig().models == [AUTO]
    assert FALLBACK_RANKING[0] == DEFAULT_MODEL
    assert get_entry(DEFAULT_MODEL).quality.min_face_px > 0  # its floor is measured, not left at none
