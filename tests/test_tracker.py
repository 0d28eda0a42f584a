"""IoU tracker on synthetic boxes: ids stay stable, cross paths correctly, expire and are never reused."""

import numpy as np

from stream.live.faces.tracker import IoUTracker, TrackerConfig, iou_matrix


def box(x, y, s=50):
    return np.array([x, y, x + s, y + s], dtype=np.float32)


def test_iou_matrix_values():
    m = iou_matrix(np.stack([box(0, 0)]), np.stack([box(0, 0), box(25, 0), box(100, 100)]))
    assert np.allclose(m, [[1.0, 1 / 3, 0.0]], atol=1e-6)


def test_two_faces_moving_keep_their_ids():
    tr = IoUTracker()
    first = tr.update([box(0, 0), box(200, 0)])
    assert first == [1, 2]
    for step in range(1, 20):
        # reported in swapped order each other frame: ids must follow the boxes, not the order
        a, b = box(step * 5, 0), box(200 - step * 3, 0)
        ids = tr.update([b, a] if step % 2 else [a, b])
        assert ids == ([2, 1] if step % 2 else [1, 2])


def test_track_survives_short_gap_then_expires():
    tr = IoUTracker(TrackerConfig(max_missed=2))
    assert tr.update([box(0, 0)]) == [1]
    assert tr.update([]) == [] and tr.expired == []
    assert tr.update([box(3, 0)]) == [1]  # back within the gap: same id
    for _ in range(2):
        tr.update([])
    assert tr.expired == []
    tr.update([])
    assert tr.expired == [1] and 1 not in tr.tracks
    assert tr.update([box(3, 0)]) == [2]  # a new face, a new id: ids are never reused


def test_jump_beyond_iou_threshold_starts_new_track():
    tr = IoUTracker(TrackerConfig(iou_threshold=0.3))
    tr.update([box(0, 0)])
    assert tr.update([box(40, 0)]) == [2]  # IoU 1/9 < 0.3


def test_one_detection_cannot_take_two_tracks():
    tr = IoUTracker()
    tr.update([box(0, 0), box(10, 0)])
    ids = tr.update([box(5, 0)])
    assert len(ids) == 1 and ids[0] in (1, 2)
