"""Retention: the oldest evidence goes first by count, bytes and age, never an open alert's, and each deletion is
logged. The open alert is a real recording, started on a real source's ring."""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from stream.config.evidence import EvidencePolicy
from stream.live.evidence import retention
from stream.live.evidence.recorder import Recorder
from stream.live.evidence.store import EvidenceStore
from stream.live.sources.live import AVLiveSource, SourceConfig

from support.shared import FFPP

DAY = 86400


def old_folders(root, n, size=1000, age_days=0.0):
    now = time.time()
    names = []
    for i in range(n):
        folder = root / f"{i:032x}"
        folder.mkdir(parents=True)
        (folder / "clip.mp4").write_bytes(b"x" * size)
        t = now - age_days * DAY - (n - i) * 60  # oldest first
        os.utime(folder, (t, t))
        names.append(folder.name)
    return names


def test_open_alert_is_never_deleted_while_the_oldest_go(tmp_path, caplog):
    root = tmp_path / "evidence"
    store = EvidenceStore(root, EvidencePolicy(max_alerts=2, pre_capture_s=1.0, post_capture_s=0.5))
    recorder = Recorder(store, {"dfstream": "test"})
    source = AVLiveSource(SourceConfig(name="df", url=str(FFPP / "fake" / "Deepfakes_519_515.mp4")))
    recorder.attach(source)
    source.start()
    try:
        deadline = time.monotonic() + 20
        while source.source_status().ring["bytes"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        open_id = "f" * 32
        done = []
        recorder.start(open_id, "df", 1, 0.5, done.append)
        store.flush()
        t = time.time() - 10 * DAY  # the open alert's folder is the oldest of all
        os.utime(root / open_id, (t, t))
        older = old_folders(root, 4)
        with caplog.at_level(logging.INFO, logger="stream.live.evidence.retention"):
            store.save("e" * 32, np.zeros((32, 32, 3), np.uint8), np.zeros((0, 32, 32, 3), np.uint8))
            store.flush()
        kept = sorted(p.name for p in root.iterdir())
        assert open_id in kept, "the open alert's evidence was deleted"
        assert kept == sorted([open_id, "e" * 32]), kept  # the open one counts, and stays
        assert all(f"evidence {n} deleted (over max_alerts" in caplog.text for n in older)
        assert done == []  # still recording
        recorder.end(open_id, 1.0)
        deadline = time.monotonic() + 20
        while not done and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done and "recording.mp4" in done[0]["files"]
        # once complete it is protected no more: an ordinary folder, aged by its last write
        assert open_id not in recorder.open_ids()
        store.save("d" * 32, np.zeros((32, 32, 3), np.uint8), np.zeros((0, 32, 32, 3), np.uint8))
        store.flush()
        assert sorted(p.name for p in root.iterdir()) == sorted([open_id, "d" * 32])
    finally:
        source.stop()
        recorder.close()
        store.close()


def test_bytes_and_age_limits_delete_oldest_first(tmp_path, caplog):
    root = tmp_path / "evidence"
    names = old_folders(root, 5, size=1000)
    with caplog.at_level(logging.INFO, logger="stream.live.evidence.retention"):
        deleted = retention.enforce(root, EvidencePolicy(max_bytes=3000))
    assert deleted == names[:2] and "over max_bytes" in caplog.text
    stale = old_folders(tmp_path / "aged", 3, age_days=10)
    (tmp_path / "aged" / ("a" * 32)).mkdir()  # written just now
    deleted = retention.enforce(tmp_path / "aged", EvidencePolicy(max_age_days=7), protected={stale[1]})
    assert deleted == [stale[0], stale[2]]
    assert sorted(p.name for p in (tmp_path / "aged").iterdir()) == sorted([stale[1], "a" * 32])
