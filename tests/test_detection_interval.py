"""The detection interval: full-frame MTCNN every `detect_every` analysed frames, each tracked face re-located on
a crop around its last box in between. A synthetic scene (a real face pasted on a plain background) appears,
moves and leaves, so where the face is is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stream.config.scheduler import DetectionPolicy, SchedulerConfig
from stream.live.faces import FaceDetector
from stream.live.faces.tracker import iou_matrix
from stream.live.scheduler.loop import Scheduler
from stream.live.sources import Frame
from stream.live.sources.buffer import LatestFrameBuffer
from stream.live.sources.live import StreamSource

from support.shared import SHARED

FACE = SHARED / "data" / "faces" / "celeba-hq"
FRAME = (720, 1280)
FACE_SIDE = 200
DETECT_EVERY = 3


class _Feed(StreamSource):
    def __init__(self) -> None:
        super().__init__("scene", "scene", LatestFrameBuffer(), 1000.0)

    def start(self):
        pass

    def stop(self):
        pass


class _Counting(FaceDetector):
    """The real detector, counting its full-frame and re-location calls."""

    full = relocated = 0

    def detect(self, images, profiles=None):
        self.full += len(images)
        return super().detect(images, profiles)

    def relocate(self, regions, scale=2.0, size=96):
        self.relocated += len(regions)
        return super().relocate(regions, scale, size)


def _scene(positions: list[tuple[int, int] | None]) -> list[Frame]:
    face = np.asarray(Image.open(sorted(FACE.glob("*.jpg"))[0]).convert("RGB").resize((FACE_SIDE, FACE_SIDE)))
    frames = []
    for k, pos in enumerate(positions):
        image = np.full((*FRAME, 3), 90, dtype=np.uint8)
        if pos is not None:
            x, y = pos
            image[y:y + FACE_SIDE, x:x + FACE_SIDE] = face
        frames.append(Frame.of(image=image, pts=k, time=k / 5.0, index=k, received=0.0))
    return frames


def _run(policy: DetectionPolicy, frames: list[Frame]):
    detector = _Counting()
    msgs: list[dict] = []
    sched = Scheduler(detector, [], lambda record: msgs.append(record.to_message()), SchedulerConfig(detection=policy))
    st = sched.add(_Feed())
    for frame in frames:
        sched.process([(st, frame)])
    overlays = [m for m in msgs if m["type"] == "overlay"]
    return overlays, detector


@pytest.fixture(scope="module")
def scene() -> tuple[list[Frame], list[tuple[int, int] | None]]:
    # 2 empty frames, the face enters and moves right and down 24 px a frame (an eighth of its size), then leaves
    positions = [None, None] + [(300 + 24 * k, 200 + 8 * k) for k in range(12)] + [None] * 4
    return _scene(positions), positions


@pytest.mark.slow  # 56 s of real MTCNN (pytest --fast --durations=40, 2026-12-07)
def test_boxes_follow_the_face_with_fewer_full_detections(scene):
    frames, positions = scene
    overlays, detector = _run(DetectionPolicy(detect_every=DETECT_EVERY), frames)
    every, full_detector = _run(DetectionPolicy(detect_every=1), frames)
    assert full_detector.full == len(frames) and full_detector.relocated == 0
    assert detector.full < 0.7 * len(frames) and detector.relocated > 0  # re-location replaced full passes
    entered = positions.index(next(p for p in positions if p is not None))
    first_box = next(k for k, m in enumerate(overlays) if m["faces"])
    assert first_box - entered < DETECT_EVERY  # a new face waits fewer than detect_every analysed frames
    ids = {f["track"] for m in overlays for f in m["faces"]}
    assert len(ids) == 1, ids  # one face, one id: no switches while it moves
    for k, (m, pos) in enumerate(zip(overlays, positions)):
        if pos is None or k < first_box:
            continue
        truth = np.array([[pos[0], pos[1], pos[0] + FACE_SIDE, pos[1] + FACE_SIDE]], dtype=np.float32)
        assert m["faces"], f"frame {k}: the face was lost"
        got = np.array([m["faces"][0]["box"]], dtype=np.float32)
        ref = np.array([every[k]["faces"][0]["box"]], dtype=np.float32)
        centre = got[0, :2] / 2 + got[0, 2:] / 2  # the face sits inside the pasted photo, wherever it moved
        inside = bool(np.all(centre > truth[0, :2]) and np.all(centre < truth[0, 2:]))
        assert iou_matrix(got, ref)[0, 0] >= 0.5 and inside, (k, got, ref, truth)
    xs = [m["faces"][0]["box"][0] for m in overlays if m["faces"]]
    assert np.all(np.diff(xs) > 0), xs  # every box moved with the face: none is a stale copy of the last one
    gone = [m for m, p in zip(overlays, positions) if p is None][-2:]
    assert all(not m["faces"] for m in gone)  # the face left: its box goes with it


def test_a_lost_face_makes_the_next_pass_detect_the_whole_frame():
    # the face jumps across the frame: re-location around the old box cannot find it, so the stream is marked
    # lost and the next pass runs full detection, which finds it again
    frames = _scene([(100, 100), (100, 100), (900, 400), (900, 400), (900, 400)])
    overlays, detector = _run(DetectionPolicy(detect_every=10), frames)
    assert [bool(m["faces"]) for m in overlays] == [True, True, False, True, True]
    assert detector.full == 2  # the first frame, and the one after the jump


def test_a_floor_above_the_frame_still_searches_one_pyramid_level():
    """A quality floor larger than the frame must not leave MTCNN an empty pyramid (it crashed with torch.cat)."""
    detector = FaceDetector(min_source_face_px=10_000)
    frames = _scene([(100, 100)])
    found = detector.detect([frames[0].image])  # raised ValueError before the clamp
    assert len(found) == 1 and all(d.box[2] - d.box[0] > 0 for d in found[0])
