"""The face evidence of an alert: a JPEG of the face when the alert starts and a short MP4 strip of its recent
face crops (the analysed frames, at the analysed rate), written on the evidence thread (worker.py) so the inference
loop never waits on JPEG or H.264 encoding. The full-frame recording is recorder.py's; retention is retention.py's,
run here after each write, never deleting a folder the store was told is still being written (`protect`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stream.config.evidence import EvidencePolicy
from stream.live.evidence import retention
from stream.live.evidence.mp4 import write_frames
from stream.live.evidence.names import SNAPSHOT, STRIP, EvidenceLayout
from stream.live.evidence.worker import EvidenceWorker

log = logging.getLogger(__name__)

JPEG_QUALITY = 90


def write_jpeg(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, quality=JPEG_QUALITY)


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """Encode uint8 RGB frames (N, H, W, 3) as a faststart H.264 MP4 with PyAV."""
    write_frames(path, frames, fps)


class EvidenceStore:
    def __init__(self, root: Path, policy: EvidencePolicy | None = None) -> None:
        self.root = Path(root)
        self.policy = policy or EvidencePolicy()
        self.root.mkdir(parents=True, exist_ok=True)
        self.layout = EvidenceLayout(self.root, record=self.policy.record)  # what the alert lifecycle names
        self._worker = EvidenceWorker()
        self._lock = threading.Lock()
        self._protected: set[str] = set()  # alerts whose folders are still being written (open recordings)

    def protect(self, alert_id: str) -> None:
        """Retention never deletes this alert's folder until `release`."""
        with self._lock:
            self._protected.add(alert_id)

    def release(self, alert_id: str) -> None:
        with self._lock:
            self._protected.discard(alert_id)

    def folder(self, alert_id: str) -> Path:
        return self.layout.folder(alert_id)

    def paths(self, alert_id: str) -> tuple[Path, Path]:
        folder = self.folder(alert_id)
        return folder / SNAPSHOT, folder / STRIP

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run `fn(*args)` on the evidence thread (file writes keep their order); failures are logged."""
        return self._worker.submit(fn, *args)

    def later(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the evidence thread once `delay_s` have passed."""
        self._worker.later(delay_s, fn, *args)

    def save(self, alert_id: str, snapshot: np.ndarray, clip: np.ndarray) -> tuple[Path, Path | None]:
        """Queue the files for writing and return their paths at once (the clip only if frames exist)."""
        snap_path, clip_path = self.paths(alert_id)
        self.submit(self._write, alert_id, snapshot, clip)
        return snap_path, clip_path if len(clip) else None

    def _write(self, alert_id: str, snapshot: np.ndarray, clip: np.ndarray) -> None:
        snap_path, clip_path = self.paths(alert_id)
        snap_path.parent.mkdir(parents=True, exist_ok=True)
        write_jpeg(snap_path, snapshot)
        if len(clip):
            write_mp4(clip_path, clip, self.policy.clip_fps)
        self.enforce_retention()

    def enforce_retention(self) -> list[str]:
        with self._lock:
            return retention.enforce(self.root, self.policy, set(self._protected))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for queued writes (tests, shutdown)."""
        self._worker.flush(timeout)

    def close(self) -> None:
        self._worker.close()
