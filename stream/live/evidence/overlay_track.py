"""The overlay track of a recording: every analysed frame's boxes and scores, keyed by the clip's own
timestamps (seconds from the recording's first frame), so the page draws them over the recording exactly as it
draws overlays live, and a burn-in copy can be made from the same data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stream.live.evidence.names import OVERLAY  # noqa: F401
from stream.messages import Overlay
FACE_KEYS = ("track", "box", "score", "raw", "engines", "verdict", "reason")


def entry(overlay: Overlay, origin: float, at: float | None = None) -> dict[str, Any]:
    """One overlay as a track entry: its time on the clip's clock and its faces' boxes and scores (as the page
    gets them live: the faces' wire form). `at` is the overlay's time on the recording's continuous clock (the
    stream's timeline: it differs from the source's own time after a loop or a reconnect); `source_time` stays
    the source's."""
    faces = [face.to_message() for face in overlay.faces]
    at = overlay.time if at is None else at
    return {"t": round(at - origin, 4), "source_time": overlay.time, "verdict": overlay.verdict,
            "faces": [{k: f.get(k) for k in FACE_KEYS} for f in faces]}


def write(path: Path, header: dict[str, Any], frames: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps({**header, "frames": frames}, separators=(",", ":")))
