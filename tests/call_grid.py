"""A synthetic video call for tests and the screen-share measurement: CelebA-HQ photos (../shared/data/faces/
celeba-hq) scaled to call-tile sizes and laid out as a grid of participants on a 1280x720 "screen".

A photo of side s holds a face whose MTCNN box is about s/2 wide (the photos are head-and-shoulders crops), so
tiles of 80-200 px are faces of about 40-100 px. `found` says which participants a detector's boxes hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import SHARED

PHOTOS = sorted((SHARED / "data" / "faces" / "celeba-hq").glob("*.jpg"))
SCREEN = (1280, 720)  # (w, h)
BACKGROUND = 24  # the call app's dark background
TILE_GREY = 52  # each participant's tile


@dataclass(frozen=True)
class Participant:
    photo: Path
    x: int
    y: int
    side: int  # the photo's side on the screen, px

    def hit_by(self, box: np.ndarray) -> bool:
        """Whether a detection's box centre falls on this participant's photo."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return self.x <= cx <= self.x + self.side and self.y <= cy <= self.y + self.side


def call_frame(cols: int, rows: int, sides: Sequence[int], first_photo: int = 0, shift: tuple[int, int] = (0, 0),
               screen: tuple[int, int] = SCREEN) -> tuple[np.ndarray, list[Participant]]:
    """A cols x rows grid of call tiles, one participant (a different photo each) of side `sides[k]` centred in
    tile k, moved by `shift` px; returns the RGB frame and where each participant is."""
    w, h = screen
    frame = np.full((h, w, 3), BACKGROUND, dtype=np.uint8)
    tw, th = w // cols, h // rows
    people = []
    for k, side in enumerate(sides):
        r, c = divmod(k, cols)
        frame[r * th + 3:(r + 1) * th - 3, c * tw + 3:(c + 1) * tw - 3] = TILE_GREY
        photo = PHOTOS[(first_photo + k) % len(PHOTOS)]
        image = np.asarray(Image.open(photo).convert("RGB").resize((side, side), Image.BILINEAR))
        x = c * tw + (tw - side) // 2 + shift[0]
        y = r * th + (th - side) // 2 + shift[1]
        frame[y:y + side, x:x + side] = image
        people.append(Participant(photo, x, y, side))
    return frame, people


def found(people: Sequence[Participant], boxes: Sequence[np.ndarray]) -> list[bool]:
    """Per participant: whether some box is on them."""
    return [any(p.hit_by(b) for b in boxes) for p in people]


# The layouts measured (docs/browser.md): calls of 4 to 12 people, tiles of 80-200 px, each with other photos.
def layouts() -> list[tuple[str, int, int, list[int], int]]:
    """(label, cols, rows, photo sides, first photo) of each measured call."""
    out = []
    first = 0
    for cols, rows in ((2, 2), (3, 2), (3, 3), (4, 3)):
        n = cols * rows
        sides = [int(round(v)) for v in np.linspace(80, 200, n)]
        out.append((f"{cols}x{rows}", cols, rows, sides, first))
        first += n
    return out
