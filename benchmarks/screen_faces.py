"""A shared screen's call grid: which participants each detection profile finds, and what it costs.

    .venv/bin/python benchmarks/screen_faces.py

The frames are synthetic calls (tests/support/call_grid.py): 12 CelebA-HQ photos of one side (60-120 px, head and
shoulders, so faces of about half that) in a 4x3 grid on a 1280x720 and a 1920x1080 screen, and the mixed
calls of 4-12 people with tiles of 80-200 px. Each is detected by the real MTCNN with the CAMERA and the SCREEN
profile (stream/config/faces.py), with the default model's quality floor as `serve` builds the detector.

The cost is counted, not timed (a timing on a shared machine says little): the pixels MTCNN's P-net sees for one
full-frame detection (its whole image pyramid, read off the net's own inputs), and per analysed frame once the
profile's detection interval spreads it (`detect_every`; re-location crops in between are not counted, and cost
the same under both profiles).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's packages
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic call

SIDES = (60, 70, 80, 100, 120)
SCREENS = ((1280, 720), (1920, 1080))


class PyramidPixels:
    """Counts the pixels of every image P-net is given (MTCNN's pyramid levels) while installed."""

    def __init__(self, pnet) -> None:
        self.pixels = 0
        pnet.register_forward_pre_hook(self._count)

    def _count(self, _module, inputs) -> None:
        x = inputs[0]
        self.pixels += int(x.shape[0] * x.shape[-1] * x.shape[-2])


def main() -> None:
    from support.call_grid import call_frame, found, layouts
    from engines.registry import DEFAULT_MODEL, get_entry
    from stream.config.faces import CAMERA, SCREEN, DetectionProfile
    from stream.config.scheduler import DetectionPolicy
    from stream.live.faces import FaceDetector

    floor = get_entry(DEFAULT_MODEL).quality.min_face_px
    detector = FaceDetector(min_source_face_px=floor)
    counter = PyramidPixels(detector._mtcnn.pnet)
    profiles = (CAMERA, SCREEN)
    every = {p.name: p.detect_every or DetectionPolicy().detect_every for p in profiles}
    print(f"quality floor of {DEFAULT_MODEL}: {floor} px; detect_every: {every}")
    print("\n12 participants of one photo side (face box about half of it): found of 12")
    print(f"{'screen':<11}{'photo px':>9}{'camera':>8}{'screen':>8}")
    cost: dict[tuple[tuple[int, int], str], int] = {}
    for screen in SCREENS:
        for side in SIDES:
            frame, people = call_frame(4, 3, [side] * 12, first_photo=5, screen=screen)
            row = []
            for profile in profiles:
                counter.pixels = 0
                boxes = [d.box for d in detector.detect([frame], [profile])[0]]
                cost[screen, profile.name] = counter.pixels
                row.append(sum(found(people, boxes)))
            print(f"{screen[0]}x{screen[1]:<6}{side:>9}{row[0]:>8}{row[1]:>8}")
    print("\nmixed calls, tiles of 80-200 px on 1280x720: found")
    for label, cols, rows, sides, first in layouts():
        frame, people = call_frame(cols, rows, sides, first)
        got = [sum(found(people, [d.box for d in detector.detect([frame], [p])[0]])) for p in profiles]
        print(f"{label:<5} {len(people):>2} people: camera {got[0]}, screen {got[1]}")
    print("\nP-net pixels: one full-frame detection / per analysed frame (detect_every spreads it)")
    base = cost[SCREENS[0], "camera"] / every["camera"]
    for screen in SCREENS:
        for p in profiles:
            px = cost[screen, p.name]
            print(f"{screen[0]}x{screen[1]:<6}{p.name:<8}{px:>9} / {px / every[p.name]:>8.0f}"
                  f"  ({px / every[p.name] / base:.2f}x the camera profile's per analysed frame at 1280x720)")
    frame, _ = call_frame(4, 3, [80] * 12, first_photo=5, screen=SCREENS[1])
    counter.pixels = 0
    detector.detect([frame], [DetectionProfile("full", max_side=max(SCREENS[1]), min_face_size=SCREEN.min_face_size)])
    print(f"for comparison, 1920x1080 at full resolution on every analysed frame: {counter.pixels} "
          f"({counter.pixels / base:.2f}x)")


if __name__ == "__main__":
    main()
