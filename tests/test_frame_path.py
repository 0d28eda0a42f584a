"""The frame path of issue 25 against the one it replaced, on the same decoded frames.

Old: every decoded frame converted to RGB on the decoder thread (`VideoFrame.to_ndarray`), downscaled for MTCNN by
PIL, face crops cut by PIL from the whole RGB frame. New: the frame stays as decoded (`Picture`), the detector's
picture is scaled in YUV and converted at the small size, crops copy only their own square of the full-resolution
frame. The references below are the old code, written out here, so a change to the new path cannot move both.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from stream.config.faces import DetectorConfig
from stream.config.scheduler import SchedulerConfig
from stream.live.faces import FaceDetector, crop_faces
from stream.live.faces.crop import square_box
from stream.live.faces.tracker import iou_matrix
from stream.live.scheduler.loop import Scheduler
from stream.live.sources import Frame
from stream.live.sources.buffer import LatestFrameBuffer
from stream.live.sources.live import StreamSource
from stream.live.sources.picture import Picture

from support.shared import FFPP_VIDEOS, MESONET_WEIGHTS

SIZE = (1280, 720)  # a camera's frame: the detector halves it, so a box maps back by 2 in each axis
FRAMES = 24  # per clip, consecutive: the scheduler tracks across them
CLIPS = 2
DETECT_MEAN_GREY = 1.0  # mean |difference| of the detector's picture from the old PIL downscale (measured ~0.4)
BOX_IOU = 0.8  # smallest box IoU with the decoded downscale (measured 0.85 and up, on faces of ~140-190 px)
MARGINAL_PROB = 0.97  # a face only one downscale finds must be this unsure (min_prob is 0.9; measured 0.94)
TRACK_SCORE_DIFF = 0.05  # largest difference of a track's mean p(fake) over the clip between the two downscales


def _decoded(video, n: int = FRAMES, size: tuple[int, int] = SIZE) -> list[av.VideoFrame]:
    """`n` frames of a shared clip, scaled to `size` and re-encoded as a camera would send them (H.264,
    yuv420p), decoded again: real decoder output."""
    out = []
    with av.open(str(video)) as inp:
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height, enc.pix_fmt, enc.time_base = size[0], size[1], "yuv420p", Fraction(1, 30)
        enc.options = {"preset": "ultrafast", "crf": "18"}
        dec = av.CodecContext.create("h264", "r")
        packets = []
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= n:
                break
            f = frame.reformat(width=size[0], height=size[1], format="yuv420p")
            f.pts = i
            packets += enc.encode(f)
        packets += enc.encode(None)
        for p in packets:
            out += dec.decode(p)
        out += dec.decode(None)
    assert len(out) == n
    return out


def _old_downscale(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """The detector's downscale before issue 25."""
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR, reducing_gap=1.0))


def _old_crops(image: np.ndarray, boxes, size: int, margin: float) -> np.ndarray:
    """crop_faces before issue 25: PIL crops of the whole RGB frame."""
    pil = Image.fromarray(image)
    return np.stack([np.asarray(pil.crop(square_box(b, margin)).resize((size, size), Image.BILINEAR))
                     for b in boxes])


@pytest.fixture(scope="module")
def frames(ffpp) -> list[list[av.VideoFrame]]:
    return [_decoded(v) for v in (FFPP_VIDEOS[0], FFPP_VIDEOS[-1])[:CLIPS]]


def test_a_picture_converts_as_the_decoder_thread_did(frames):
    for vf in frames[0][:4]:
        old = vf.to_ndarray(format="rgb24")
        picture = Picture(video=vf)
        assert not picture.converted  # nothing is converted until something reads it
        assert np.array_equal(picture.rgb(), old)  # the same pixels, in the same (RGB) order
        small = picture.scaled(640, 360)
        ref = _old_downscale(old, 640, 360)
        assert small.shape == ref.shape
        assert np.abs(small.astype(int) - ref).mean() < DETECT_MEAN_GREY  # colour order and place kept
        assert Picture(rgb=old).scaled(640, 360).tobytes() == ref.tobytes()  # an RGB picture takes the old path


def test_crops_are_the_old_crops_pixel_for_pixel_without_copying_the_frame(frames):
    rng = np.random.default_rng(7)
    for vf in frames[0][:3]:
        old = vf.to_ndarray(format="rgb24")
        picture = Picture(video=vf)
        # faces anywhere, part outside the frame too (those parts are black in both)
        xy = rng.uniform([-150, -150], [1250, 700], (10, 2))
        side = rng.uniform(30, 420, (10, 1))
        boxes = list(np.hstack([xy, xy + side * [1.0, 1.25]]).astype(np.float32))
        for size, margin in ((256, 0.2), (299, 0.3), (224, 0.3), (96, 0.5), (64, 0.0)):
            assert np.array_equal(crop_faces(picture, boxes, size, margin), _old_crops(old, boxes, size, margin)), \
                (size, margin)


def test_region_is_black_outside_the_frame_and_copies_only_itself():
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    picture = Picture(rgb=image)
    region = picture.region(-2, 4, 3, 9)  # 5 wide, 5 high: 2 columns left of the frame, 3 rows below it
    assert region.shape == (5, 5, 3)
    assert np.array_equal(region[:2, 2:], image[4:6, 0:3]) and not region[2:].any() and not region[:, :2].any()
    region[:] = 255
    assert np.array_equal(picture.rgb(), np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3))  # a copy


def test_a_picture_refuses_what_is_not_a_frame():
    with pytest.raises(ValueError, match="exactly one"):
        Picture()
    with pytest.raises(ValueError, match="uint8"):
        Picture(rgb=np.zeros((4, 4), np.uint8))


def test_encoders_get_a_frame_of_their_own(frames):
    vf = frames[0][0]
    picture = Picture(video=vf)
    same = picture.for_encoder(vf.width, vf.height)  # nothing to convert: still not the decoded frame itself
    assert same is not vf and same.format.name == "yuv420p"
    same.pts = 12345
    assert vf.pts != 12345
    assert np.array_equal(same.to_ndarray(), vf.to_ndarray())
    small = picture.for_encoder(960, 540)
    assert (small.width, small.height) == (960, 540) and not picture.converted  # the relay never makes RGB


class _Feed(StreamSource):
    def __init__(self, name: str) -> None:
        super().__init__(name, name, LatestFrameBuffer(), 1000.0)

    def start(self):
        pass

    def stop(self):
        pass


def _run_scheduler(clips: list[list[Frame]], detector: FaceDetector, engine) -> list[list[dict]]:
    """Every clip as one stream, one frame of each per pass (the real scheduler's detect, track and score)."""
    msgs: list[dict] = []
    sched = Scheduler(detector, [engine], lambda record: msgs.append(record.to_message()), SchedulerConfig())
    streams = [sched.add(_Feed(f"cam{k}")) for k in range(len(clips))]
    for frames in zip(*clips):
        sched.process(list(zip(streams, frames)))
    sched.judge.close()
    overlays = [m for m in msgs if m["type"] == "overlay"]
    return [[m for m in overlays if m["stream"] == st.name] for st in streams]


@pytest.fixture(scope="module")
def engine():
    from engines.registry import build_engine

    return build_engine("meso4-df", weights_dir=MESONET_WEIGHTS, allow_download=False)


def _both_paths(frames, engine, downscale: str) -> tuple[list[list[dict]], list[list[dict]]]:
    """The same decoded frames through the real scheduler (MTCNN on ORT, meso4-df on the shared weights, the
    default detection interval): once as RGB arrays made on decoding (the old path), once as decoded pictures."""
    old = [[Frame(Picture(rgb=vf.to_ndarray(format="rgb24")), vf.pts, i / 30, i, 0.0) for i, vf in enumerate(c)]
           for c in frames]
    new = [[Frame(Picture(video=vf), vf.pts, i / 30, i, 0.0) for i, vf in enumerate(c)] for c in frames]
    got_old = _run_scheduler(old, FaceDetector(DetectorConfig(backend="onnx", downscale="rgb")), engine)
    got_new = _run_scheduler(new, FaceDetector(DetectorConfig(backend="onnx", downscale=downscale)), engine)
    return got_old, got_new


def _pairs(got_old, got_new, exact: bool):
    """(clip, old face, new face) of every face-frame, matched by track id. The same faces under the same ids; with the
    decoded downscale (not `exact`) a face at MTCNN's threshold may be found by one path only."""
    out = []
    for n, (clip_old, clip_new) in enumerate(zip(got_old, got_new)):
        assert len(clip_old) == len(clip_new) == FRAMES
        for k, (a, b) in enumerate(zip(clip_old, clip_new)):
            old, new = ({f["track"]: f for f in m["faces"]} for m in (a, b))
            for only in (old.keys() ^ new.keys()):
                face = old.get(only) or new[only]
                assert not exact and face["prob"] < MARGINAL_PROB, (k, a["faces"], b["faces"])
            out += [(n, old[t], new[t]) for t in old.keys() & new.keys()]
    assert len(out) >= 0.8 * FRAMES * len(got_old)  # the clips show a face nearly always: not vacuous
    return out


@pytest.mark.slow  # 37 s (pytest --fast --durations=30, 2026-12-07)
def test_the_new_frame_path_gives_the_old_results_exactly(frames, engine):
    """With the old downscale, everything else of the new path (frames kept as decoded, RGB made on take, crops
    cut from their own squares) must change no box, id or score: a swapped colour order or a crop off by a pixel
    moves them."""
    for _, old, new in _pairs(*_both_paths(frames, engine, "rgb"), exact=True):
        assert old["box"] == new["box"] and old["prob"] == new["prob"]
        assert old["engines"] == new["engines"] and old["score"] == new["score"]


@pytest.mark.slow  # 33 s (pytest --fast --durations=30, 2026-12-07)
def test_the_decoded_downscale_agrees_with_the_old_one_within_mtcnn_rounding(frames, engine):
    """The default scales the detector's picture in YUV: MTCNN sees a picture a fraction of a grey level
    different, so boxes move by its rounding (a few pixels), and MesoNet, which swings with a few pixels of crop,
    moves single face-frames; per track over the clip the scores agree."""
    pairs = _pairs(*_both_paths(frames, engine, "decoded"), exact=False)
    per_track: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for clip, old, new in pairs:
        a, b = np.array(old["box"], np.float32), np.array(new["box"], np.float32)
        assert iou_matrix(a[None], b[None])[0, 0] >= BOX_IOU, (a, b)
        for name, p in old["engines"].items():
            per_track.setdefault((clip, old["track"]), []).append((p, new["engines"][name]))
    for track, scores in per_track.items():
        old_mean, new_mean = np.mean(scores, axis=0)
        assert abs(old_mean - new_mean) <= TRACK_SCORE_DIFF, (track, old_mean, new_mean)
