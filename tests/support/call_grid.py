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

from support.shared import SHARED

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


# --- the same call as a web page, for Chromium to share as a tab -------------------------------------------------
CALL_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>html, body {{ margin: 0; background: #181a1f; overflow: hidden; }} canvas {{ display: block; }}</style></head>
<body><canvas id="call" width="{w}" height="{h}"></canvas>
<script>
// A {cols}x{rows} call: each participant's photo in its tile, swaying a few pixels (so it is video), a name under it,
// and the call's sound (a quiet tone, or someone speaking), so the tab has audio to share.
const canvas = document.getElementById("call"), ctx = canvas.getContext("2d");
const cols = {cols}, rows = {rows}, side = {side}, tw = {w} / cols, th = {h} / rows;
const people = {photos}.map((src, k) => {{ const img = new Image(); img.src = src; return {{ img, k }}; }});
function draw(t) {{
  ctx.fillStyle = "#181a1f"; ctx.fillRect(0, 0, {w}, {h});
  for (const {{ img, k }} of people) {{
    const c = k % cols, r = Math.floor(k / cols);
    ctx.fillStyle = "#2b2f38"; ctx.fillRect(c * tw + 4, r * th + 4, tw - 8, th - 8);
    const dx = 6 * Math.sin(t / 700 + k), dy = 4 * Math.cos(t / 900 + 2 * k);
    if (img.complete) ctx.drawImage(img, c * tw + (tw - side) / 2 + dx, r * th + (th - side) / 2 + dy, side, side);
    ctx.fillStyle = "#dfe3ea"; ctx.font = "16px sans-serif"; ctx.fillText("Participant " + (k + 1), c * tw + 14, (r + 1) * th - 14);
  }}
  requestAnimationFrame(draw);
}}
requestAnimationFrame(draw);
{sound}
</script></body></html>
"""
# The call's sound: a quiet tone, or, where the call is given a WAV, that (a participant speaking), looped.
TONE = """try {
  const audio = new AudioContext(), tone = audio.createOscillator(), gain = audio.createGain();
  gain.gain.value = 0.05; tone.frequency.value = 220; tone.connect(gain).connect(audio.destination); tone.start();
} catch (e) { /* no sound: the test says so */ }"""
VOICE = """const voice = new Audio("/sound.wav"); voice.loop = true; voice.play().catch(() => {});"""


class CallPage:
    """The call as a page on a free loopback port (a thread of its own, stopped on exit): `url` shows `cols` x
    `rows` participants, photos of `side` px, titled `title` (what Chromium's tab picker is told to choose); its
    sound is `sound` (a WAV, looped) or a quiet tone."""

    def __init__(self, title: str, cols: int = 2, rows: int = 2, side: int = 300, first_photo: int = 0,
                 screen: tuple[int, int] = SCREEN, sound: Path | None = None) -> None:
        import http.server

        photos = [PHOTOS[(first_photo + k) % len(PHOTOS)] for k in range(cols * rows)]
        page = CALL_PAGE.format(title=title, w=screen[0], h=screen[1], cols=cols, rows=rows, side=side,
                                photos=[f"/photo/{k}.jpg" for k in range(len(photos))],
                                sound=VOICE if sound is not None else TONE).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/":
                    body, kind = page, "text/html; charset=utf-8"
                elif self.path == "/sound.wav" and sound is not None:
                    body, kind = Path(sound).read_bytes(), "audio/wav"
                elif self.path.startswith("/photo/") and self.path[7:-4].isdigit() \
                        and int(self.path[7:-4]) < len(photos):
                    body, kind = photos[int(self.path[7:-4])].read_bytes(), "image/jpeg"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.title = title
        self.photos = photos
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"

    def __enter__(self) -> "CallPage":
        import threading

        self._thread = threading.Thread(target=self._server.serve_forever, name="call-page", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
