"""Alert evidence on disk: a JPEG of the face when the alert starts and a short MP4 of its recent crops.

Files are written on one background thread, so the inference loop never waits on JPEG or H.264 encoding, and
old evidence is deleted beyond a retention limit (count and bytes) so a long-running server cannot fill the disk.
"""

from __future__ import annotations

import logging
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from stream.config.verdicts import EvidencePolicy

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
CLIP_CODEC = "libx264"  # H.264 in MP4 plays in every browser
CLIP_PIXEL_FORMAT = "yuv420p"


def write_jpeg(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, quality=JPEG_QUALITY)


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """Encode uint8 RGB frames (N, H, W, 3), H and W even, as H.264 MP4 with PyAV."""
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream(CLIP_CODEC, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = CLIP_PIXEL_FORMAT
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


class EvidenceStore:
    def __init__(self, root: Path, policy: EvidencePolicy | None = None) -> None:
        self.root = Path(root)
        self.policy = policy or EvidencePolicy()
        self.root.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence")
        self._lock = threading.Lock()

    def paths(self, alert_id: str) -> tuple[Path, Path]:
        folder = self.root / alert_id
        return folder / "snapshot.jpg", folder / "clip.mp4"

    def save(self, alert_id: str, snapshot: np.ndarray, clip: np.ndarray) -> tuple[Path, Path | None]:
        """Queue the files for writing and return their paths at once (the clip only if frames exist)."""
        snap_path, clip_path = self.paths(alert_id)
        self._pool.submit(self._write, alert_id, snapshot, clip).add_done_callback(self._report)
        return snap_path, clip_path if len(clip) else None

    def _write(self, alert_id: str, snapshot: np.ndarray, clip: np.ndarray) -> None:
        snap_path, clip_path = self.paths(alert_id)
        snap_path.parent.mkdir(parents=True, exist_ok=True)
        write_jpeg(snap_path, snapshot)
        if len(clip):
            write_mp4(clip_path, clip, self.policy.clip_fps)
        self._enforce_retention()

    @staticmethod
    def _report(future: Future) -> None:
        if future.exception() is not None:
            log.error("writing evidence failed: %s", future.exception())

    def _enforce_retention(self) -> None:
        with self._lock:
            folders = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
            sizes = {p: sum(f.stat().st_size for f in p.iterdir()) for p in folders}
            total = sum(sizes.values())
            while folders and (len(folders) > self.policy.max_alerts or total > self.policy.max_bytes):
                oldest = folders.pop(0)
                total -= sizes[oldest]
                shutil.rmtree(oldest, ignore_errors=True)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for queued writes (tests, shutdown)."""
        self._pool.submit(lambda: None).result(timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
