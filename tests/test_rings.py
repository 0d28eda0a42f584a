"""Ring buffers: windows come out in order, at the stride, per track; expired tracks free their memory."""

import numpy as np
import pytest

from stream.live.rings import CropRing, TrackRings, WindowSpec


def crop(value: int, size: int = 4) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def test_ring_window_is_oldest_first_after_wrap():
    ring = CropRing(3, 4)
    with pytest.raises(ValueError):
        ring.window()
    for v in range(1, 6):
        ring.push(crop(v))
    assert [int(c[0, 0, 0]) for c in ring.window()] == [3, 4, 5]


def test_windows_emitted_at_stride_per_track():
    clip = WindowSpec(size=4, margin=0.1, length=4, stride=2)
    rings = TrackRings([clip])
    emitted = {1: [], 2: []}
    for step in range(10):
        for track in (1, 2):
            for w in rings.push(track, {clip.crop_key: crop(step * 10 + track)}):
                emitted[track].append([int(c[0, 0, 0]) for c in w.clip])
    # full after 4 pushes (steps 0..3), then every 2nd push: after steps 3, 5, 7, 9
    assert emitted[1] == [[1, 11, 21, 31], [21, 31, 41, 51], [41, 51, 61, 71], [61, 71, 81, 91]]
    assert emitted[2][0] == [2, 12, 22, 32] and len(emitted[2]) == 4


def test_several_specs_and_expiry_returns_memory():
    frame = WindowSpec(size=4, margin=0.2, length=1)
    seq = WindowSpec(size=6, margin=0.2, length=3, stride=3)
    rings = TrackRings([frame, seq, frame])  # duplicates collapse
    assert len(rings.specs) == 2
    out = []
    for step in range(6):
        out += rings.push(7, {frame.crop_key: crop(step, 4), seq.crop_key: crop(step, 6)})
    assert sum(w.spec == frame for w in out) == 6 and sum(w.spec == seq for w in out) == 2
    assert rings.nbytes == 1 * 4 * 4 * 3 + 3 * 6 * 6 * 3
    rings.expire([7])
    assert rings.tracks == [] and rings.nbytes == 0
