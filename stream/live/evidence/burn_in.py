"""The burn-in copy: the recording with its overlay track's boxes and scores drawn into the pixels, for people
who will forward the file to someone without the page. Re-encoded (H.264, yuv420p, each frame at its own
timestamp), so it is a second file beside the untouched recording, never a replacement for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw

from stream.live.evidence.mp4 import ENCODE_CODEC, ENCODE_PIXEL_FORMAT, FASTSTART

ENTRY_MAX_AGE_S = 1.0  # as the page: an analysed frame's boxes stay drawn this long
COLOURS = {"real": (47, 179, 107), "uncertain": (240, 180, 41), "fake": (229, 72, 77)}
GREY = (138, 148, 166)
CRF = "20"


def _entry_at(frames: list[dict[str, Any]], t: float) -> dict[str, Any] | None:
    best = None
    for f in frames:  # few entries per second: a scan is fine
        if f["t"] <= t + 1e-3:
            best = f
        else:
            break
    return best if best is not None and t - best["t"] <= ENTRY_MAX_AGE_S else None


def draw(image: np.ndarray, entry: dict[str, Any] | None) -> np.ndarray:
    if not entry or not entry["faces"]:
        return image
    pil = Image.fromarray(image)
    d = ImageDraw.Draw(pil)
    width = max(2, image.shape[1] // 320)
    for face in entry["faces"]:
        x1, y1, x2, y2 = face["box"]
        colour = COLOURS.get(face.get("verdict"), GREY) if face.get("score") is not None else GREY
        d.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        score = face.get("score")
        label = f"#{face['track']} {face.get('verdict')} {round(score * 100)}%" if score is not None else \
            f"#{face['track']} {face.get('verdict')}"
        box = d.textbbox((x1, max(0, y1 - 14)), label)
        d.rectangle([box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1], fill=colour)
        d.text((x1, max(0, y1 - 14)), label, fill=(11, 14, 20))
    return np.asarray(pil)


def burn_in(recording: Path, frames: list[dict[str, Any]], out_path: Path) -> int:
    """Write `out_path` from `recording` with `frames` (the overlay track) drawn on; returns frames written."""
    n = 0
    with av.open(str(recording)) as src, av.open(str(out_path), "w", format="mp4", options=FASTSTART) as out:
        s = src.streams.video[0]
        rate = s.average_rate or 30
        o = out.add_stream(ENCODE_CODEC, rate=rate)
        o.width, o.height = s.codec_context.width & ~1, s.codec_context.height & ~1
        o.pix_fmt = ENCODE_PIXEL_FORMAT
        o.time_base = s.time_base
        o.codec_context.time_base = s.time_base
        o.options = {"crf": CRF, "preset": "veryfast"}
        last = -1
        for vf in src.decode(s):
            if vf.pts is None or vf.pts <= last:
                continue
            last = vf.pts
            image = draw(vf.to_ndarray(format="rgb24")[: o.height, : o.width], _entry_at(frames, float(vf.time)))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = vf.pts, s.time_base
            for p in o.encode(frame):
                out.mux(p)
            n += 1
        for p in o.encode():
            out.mux(p)
    return n
