"""One decoded picture, converted only as far as its readers need it.

A decoder thread hands on the decoded `av.VideoFrame` as it came out of FFmpeg (YUV, about half the bytes of RGB)
and converts nothing: most frames are only displayed (the relay encodes from the decoded planes) and are never
analysed, so they never need RGB. A frame the scheduler takes is converted on its thread, once, as each step needs:

- `scaled(width, height)`: the small RGB picture MTCNN searches. Scaled in the decoded format (area averaging),
  then converted by swscale's unscaled converter; the full-size RGB is never made for it. Measured (thread CPU
  time, one frame): 1.1 ms at 720p and 1.7 ms at 1080p with the full-size RGB the crops need, where converting
  at full size and downscaling with PIL takes 2.9 and 5.9 ms. One `reformat` from YUV straight to a small RGB
  frame costs more than the two steps (swscale's scaled RGB output is its slow path).
- `rgb()`: the full-resolution RGB frame, converted once and kept (face crops are cut from it, so a box maps to
  source pixels exactly).
- `region(left, top, right, bottom)`: a rectangle of `rgb()`, black outside the frame, copied alone: a face crop
  never copies the whole frame.

Each thread keeps its own swscale contexts (`_Reformatters`): creating one per frame (what `VideoFrame.to_ndarray`
does) costs about as much as the conversion itself, and PyAV's default of "threads: auto" starts a slice-thread pool
per context. A picture made from an RGB array (tests, the old path) answers the same calls from that array.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from PIL import Image

# How the detector's picture is scaled down in the decoded format. AREA averages every source pixel, like the PIL
# box filter of the RGB path (mean |difference| 0.4 grey levels at 1280x720 -> 640x360), at about the cost of
# BILINEAR; FAST_BILINEAR is cheaper but aliases (mean |difference| ~6), which costs MTCNN small faces.
DETECT_INTERPOLATION = "AREA"
# swscale threads per conversion. One: a conversion is 0.3-1 ms of work, shorter than a slice-thread pool's
# hand-off, and the parallelism that pays comes from the many streams and stages already running at once.
SWS_THREADS = 1
CONTEXTS_PER_THREAD = 16  # swscale contexts kept per thread (one per geometry: a few sources' sizes and uses)
PIL_REDUCING_GAP = 1.0  # the RGB path's downscale: box filter by the integer factor first, then bilinear


class _Reformatters(threading.local):
    """Per thread, one reused `VideoReformatter` per (source geometry, target geometry, format, interpolation)."""

    def __init__(self) -> None:
        self.cache: OrderedDict[tuple, Any] = OrderedDict()

    def reformat(self, frame: Any, width: int | None = None, height: int | None = None, format: str | None = None,
                 interpolation: str | None = None) -> Any:
        from av.video.reformatter import VideoReformatter

        key = (frame.width, frame.height, frame.format.name, width, height, format, interpolation)
        ref = self.cache.pop(key, None) or VideoReformatter()
        self.cache[key] = ref
        while len(self.cache) > CONTEXTS_PER_THREAD:
            self.cache.popitem(last=False)
        return ref.reformat(frame, width, height, format, interpolation=interpolation, threads=SWS_THREADS)


_reformatters = _Reformatters()


def reformat(frame: Any, width: int | None = None, height: int | None = None, format: str | None = None,
             interpolation: str | None = None) -> Any:
    """`frame.reformat(...)` with this thread's reused swscale context (the relay and the encoders use it too)."""
    return _reformatters.reformat(frame, width, height, format, interpolation)


class Picture:
    """A decoded frame (`video`, an `av.VideoFrame`) or an RGB array, with the conversions the pipeline needs.

    Thread-safe: the decoder thread makes it, then the detector worker, the scheduler, the relay's encoder and a
    recorder may read it at once; the full RGB frame is converted once, under the picture's own lock."""

    __slots__ = ("_video", "_rgb", "_lock", "width", "height")

    def __init__(self, video: Any = None, rgb: np.ndarray | None = None) -> None:
        if (video is None) == (rgb is None):
            raise ValueError("a Picture holds a decoded frame or an RGB array, exactly one")
        if rgb is not None and (rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8):
            raise ValueError(f"an RGB picture is uint8 (height, width, 3), got {rgb.dtype} {rgb.shape}")
        self._video = video
        self._rgb = rgb
        self._lock = threading.Lock()
        self.width, self.height = (video.width, video.height) if video is not None else (rgb.shape[1], rgb.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.width, self.height

    @property
    def video(self) -> Any:
        """The decoded `av.VideoFrame`, or None for a picture made from RGB."""
        return self._video

    @property
    def converted(self) -> bool:
        """Whether the full RGB frame exists (was made, or given)."""
        return self._rgb is not None

    def rgb(self) -> np.ndarray:
        """The full-resolution RGB frame (height, width, 3), converted on the first call and kept."""
        if self._rgb is None:
            with self._lock:
                if self._rgb is None:
                    self._rgb = reformat(self._video, format="rgb24").to_ndarray()
        return self._rgb

    def scaled(self, width: int, height: int, in_decoded: bool = True) -> np.ndarray:
        """RGB at (width, height): the detector's input. `in_decoded`: scaled in the decoded format and converted
        at the small size, so the full-size RGB frame is not made for it; else (and for a picture made from RGB)
        the full RGB frame downscaled by PIL, the path before issue 25, pixel for pixel."""
        if (width, height) == self.size:
            return self.rgb()
        if self._video is not None and in_decoded:
            small = reformat(self._video, width, height, interpolation=DETECT_INTERPOLATION)
            return reformat(small, format="rgb24").to_ndarray()
        return np.asarray(Image.fromarray(self.rgb()).resize((width, height), Image.BILINEAR,
                                                             reducing_gap=PIL_REDUCING_GAP))

    def region(self, left: int, top: int, right: int, bottom: int) -> np.ndarray:
        """The RGB pixels of [left, right) x [top, bottom) in frame pixels, black where the rectangle leaves the
        frame: only the rectangle is copied."""
        image = self.rgb()
        h, w = image.shape[:2]
        out = np.zeros((max(0, bottom - top), max(0, right - left), 3), dtype=np.uint8)
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
        if x1 > x0 and y1 > y0:
            out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
        return out

    def for_encoder(self, width: int, height: int, format: str = "yuv420p") -> Any:
        """A new `av.VideoFrame` of the picture at (width, height) in `format`, for an encoder (the relay, a
        webcam's recording ring): made from the decoded planes when there are some, so a displayed frame is never
        converted to RGB. Always a frame of its own, never the shared decoded one, because an encoder sets its
        `pts` and picture type."""
        import av

        source = self._video
        if source is None:
            source = av.VideoFrame.from_ndarray(np.ascontiguousarray(self._rgb), format="rgb24")
        out = reformat(source, width, height, format)
        if out is self._video:  # nothing to convert: swscale hands back the decoded frame itself
            out = av.VideoFrame.from_ndarray(out.to_ndarray(), format=format)
        return out


def as_picture(image: Picture | np.ndarray) -> Picture:
    """A picture of `image` (an RGB array is wrapped, a picture returned as is)."""
    return image if isinstance(image, Picture) else Picture(rgb=image)
