"""A shared screen is searched for faces with its own profile (stream/config/faces.py SCREEN): a call's grid of
small participants in a large picture is found, where the camera profile's 640 px downscale misses most of them,
and its costlier full-frame detection runs less often, with re-location in between.

The calls are synthetic (tests/support/call_grid.py): real CelebA-HQ photos laid out as call tiles, so where every
participant is is known exactly. The detector is the real MTCNN, with the default model's quality floor as
`serve` builds it.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from engines.registry import DEFAULT_MODEL, get_entry
from stream.config.faces import CAMERA, SCREEN
from stream.config.scheduler import DetectionPolicy, SchedulerConfig
from stream.config.sources import SourceConfig
from stream.live.faces import FaceDetector
from stream.live.scheduler.loop import Scheduler
from stream.live.sources import Frame
from stream.live.sources.buffer import LatestFrameBuffer
from stream.live.sources.live import AVLiveSource, StreamSource

from support.call_grid import call_frame, found, layouts

FLOOR_PX = get_entry(DEFAULT_MODEL).quality.min_face_px
SMALL = 80  # call tiles of 80 px: faces of about 40 px
PASSES = 12


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(min_source_face_px=FLOOR_PX)


def test_screen_profile_finds_a_1080p_call_grid_the_camera_profile_misses(detector):
    frame, people = call_frame(4, 3, [SMALL] * 12, first_photo=5, screen=(1920, 1080))
    screen, camera = (found(people, [d.box for d in faces]) for faces in
                      detector.detect([frame, frame], [SCREEN, CAMERA]))
    assert all(screen), f"the screen profile missed {screen.count(False)} of 12 participants"
    # the camera profile halves a 1080p screen three times over: most of these faces fall below its smallest size
    assert sum(camera) <= 6, f"the camera profile found {sum(camera)} of 12: this frame no longer tells them apart"
    # boxes are in the screen's own pixels, about half a tile wide
    sizes = [float(d.box[2] - d.box[0]) for d in detector.detect([frame], [SCREEN])[0]]
    assert 0.3 * SMALL < np.median(sizes) < 0.8 * SMALL, sizes


def test_screen_profile_finds_every_participant_of_a_mixed_720p_call(detector):
    label, cols, rows, sides, first = layouts()[-1]  # 12 people, tiles of 80-200 px
    frame, people = call_frame(cols, rows, sides, first)
    hit = found(people, [d.box for d in detector.detect([frame], [SCREEN])[0]])
    assert all(hit), f"{label}: missed the tiles of {[p.side for p, h in zip(people, hit) if not h]} px"


class _Feed(StreamSource):
    def __init__(self, name: str, detection=CAMERA) -> None:
        super().__init__(name, name, LatestFrameBuffer(), 1000.0)
        self.detection = detection

    def start(self):
        pass

    def stop(self):
        pass


class _Recording(FaceDetector):
    """The real detector, noting the profile of every full-frame detection."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.profiles: list[str] = []

    def detect(self, images, profiles=None):
        self.profiles += [p.name for p in profiles or [CAMERA] * len(images)]
        return super().detect(images, profiles)


def test_the_scheduler_detects_a_screen_with_its_profile_and_interval():
    """Two screens and two cameras. On a 1080p call of small faces the screen's stream tracks every participant,
    each keeping its track id (a face lost by re-location is found again by the next full detection, under its
    old id), while the camera's finds few. On a 720p call of large faces, which re-location never loses, full
    detection runs on the profile's interval: every 12th pass for the screen, every 3rd for the camera (the interval
    itself, so without the stagger, which may run a stream's full detection early once: test_detection_workers.py)."""
    small, _ = call_frame(4, 3, [SMALL] * 12, first_photo=5, screen=(1920, 1080))
    large, _ = call_frame(2, 2, [160, 180, 200, 220], first_photo=20)
    detector = _Recording(min_source_face_px=FLOOR_PX)
    msgs: list[dict] = []
    sched = Scheduler(detector, [], lambda record: msgs.append(record.to_message()),
                      SchedulerConfig(detection=DetectionPolicy(stagger=False)))
    feeds = {"call": (sched.add(_Feed("call", SCREEN)), small), "webcam": (sched.add(_Feed("webcam")), small),
             "tab": (sched.add(_Feed("tab", SCREEN)), large), "cam": (sched.add(_Feed("cam")), large)}
    for k in range(PASSES):
        sched.process([(st, Frame.of(image=image, pts=k, time=k / 5.0, index=k, received=0.0))
                       for st, image in feeds.values()])
    faces = {name: [m["faces"] for m in msgs if m["type"] == "overlay" and m["stream"] == name] for name in feeds}
    ids = {name: {f["track"] for each in faces[name] for f in each} for name in feeds}
    assert ids["call"] == set(range(1, 13)), ids["call"]
    assert sum(len(each) == 12 for each in faces["call"]) >= PASSES // 2, [len(each) for each in faces["call"]]
    assert len(ids["webcam"]) < 12, ids["webcam"]
    assert all(len(each) == 4 for name in ("tab", "cam") for each in faces[name])
    tab, cam = feeds["tab"][0], feeds["cam"][0]
    assert tab.full_detections == -(-PASSES // SCREEN.detect_every)
    assert cam.full_detections == -(-PASSES // 3)
    screens = feeds["call"][0].full_detections + tab.full_detections
    assert detector.profiles.count("screen") == screens
    assert detector.profiles.count("camera") == feeds["webcam"][0].full_detections + cam.full_detections


def test_a_configured_source_takes_its_profile_and_a_bad_one_is_refused(tmp_path):
    video = tmp_path / "call.mp4"
    video.write_bytes(b"")  # never opened: the source is not started
    assert AVLiveSource(SourceConfig(name="cam", url=str(video))).detection is CAMERA
    assert AVLiveSource(SourceConfig(name="call", url=str(video), detection="screen")).detection is SCREEN
    with pytest.raises(ValidationError, match="detection"):
        SourceConfig(name="call", url=str(video), detection="tv")
