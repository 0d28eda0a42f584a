"""The face crops of a file, and their cache on disk.

Decoding and detection cost far more than MesoNet itself, so `eval` (and `calibrate` and training, which read the
same crops) cache the face crops of each file as .npz, keyed by the file's sha256 (its content, never its name) and
the crop spec (crop sizes and margins, fps, detector and tracker settings). A second run over the same data only
scores. Scoring always runs from those crop arrays, fresh or cached, so both runs give identical scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from engines.weights import sha256_of
from stream.jobs.scan import CropKey, FaceBatch, FaceFrame, Scanner
from stream.live.faces.quality import FaceQuality
from stream.live.faces.tracker import TrackerConfig

CACHE_VERSION = 2  # bump when the cached arrays' meaning changes (2: each face's size and sharpness)
CACHE_ENV = "DFSTREAM_CACHE"
CROPS_SUBDIR = "crops"
SPEC_HASH_CHARS = 16

log = logging.getLogger(__name__)


class FramesSeen(Protocol):
    """Told how many sampled frames were decoded (a progress bar)."""

    def frames(self, n: int) -> None: ...


def default_crop_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / CROPS_SUBDIR
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dfstream" / CROPS_SUBDIR


@dataclass
class FaceCrops:
    """Every face `face_batches` found in one file, in order: its sampled-frame ordinal, track id and crops."""

    frames: int  # sampled frames decoded, faces or not
    index: np.ndarray  # (N,) sampled-frame ordinal of each face
    track: np.ndarray  # (N,) track id of each face
    crops: dict[CropKey, np.ndarray]  # (N, size, size, 3) uint8 per (size, margin)
    face_px: np.ndarray | None = None  # (N,) each face's short side in source pixels
    sharpness: np.ndarray | None = None  # (N,) each face's sharpness (stream.live.faces.quality)

    @classmethod
    def extract(cls, scanner: Scanner, path: Path, progress: FramesSeen) -> FaceCrops:
        """Decode, detect and crop one file; raises one of `READ_ERRORS` if it is unreadable."""
        frames, faces = 0, []
        for batch in scanner.face_batches(path):
            frames += batch.frames
            faces += batch.faces
            progress.frames(batch.frames)
        keys = scanner.crop_keys
        rows = [(f.index, t) for f in faces for t in f.tracks]
        quality = [q for f in faces for q in f.quality]
        return cls(
            frames=frames,
            index=np.array([r[0] for r in rows], dtype=np.int64),
            track=np.array([r[1] for r in rows], dtype=np.int64),
            face_px=np.array([q.face_px for q in quality], dtype=np.float64),
            sharpness=np.array([q.sharpness for q in quality], dtype=np.float64),
            crops={k: np.concatenate([f.crops[k] for f in faces]) if faces else np.empty((0, k[0], k[0], 3), np.uint8)
                   for k in keys},
        )

    def batches(self, batch_frames: int) -> Iterator[FaceBatch]:
        """Replay as the `FaceBatch`es `face_batches` made (same frames per batch), so engines see the same batches."""
        for first in range(0, self.frames, batch_frames):
            in_batch = np.flatnonzero((self.index >= first) & (self.index < first + batch_frames))
            faces = []
            for ordinal in dict.fromkeys(self.index[in_batch].tolist()):
                rows = in_batch[self.index[in_batch] == ordinal]
                quality = ([FaceQuality(float(p), float(s)) for p, s in zip(self.face_px[rows], self.sharpness[rows])]
                           if self.face_px is not None and self.sharpness is not None else [])
                faces.append(FaceFrame(ordinal, self.track[rows].tolist(), {k: c[rows] for k, c in self.crops.items()},
                                       quality))
            yield FaceBatch(frames=min(batch_frames, self.frames - first), faces=faces)


class CropCache:
    """Face crops on disk, one .npz per (file content, crop spec). Compressed (about 1.5x smaller, and loading
    stays far cheaper than decoding). Writes are atomic, so a killed run leaves no half-written entry; an
    unreadable entry is treated as a miss."""

    def __init__(self, root: Path, scanner: Scanner) -> None:
        self.root = Path(root)
        detector = scanner.detector.config.model_dump() if scanner.detector is not None else None
        spec = {"version": CACHE_VERSION, "crop_keys": scanner.crop_keys, "fps": scanner.fps,
                "faces": scanner.options.faces, "batch_frames": scanner.options.batch_frames,
                "detector": detector, "tracker": TrackerConfig().model_dump()}
        self.spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:SPEC_HASH_CHARS]
        self.hits = self.misses = 0

    def entry(self, path: Path) -> Path:
        """Where `path`'s crops live: named by its content's sha256, so a renamed or linked copy hits too."""
        digest = sha256_of(path)
        return self.root / digest[:2] / f"{digest}-{self.spec_hash}.npz"

    def load(self, entry: Path) -> FaceCrops | None:
        try:
            with np.load(entry, allow_pickle=False) as z:
                keys = [(int(s), float(m)) for s, m in z["keys"]]
                crops = FaceCrops(frames=int(z["frames"]), index=z["index"], track=z["track"],
                                  crops={k: z[f"crops{i}"] for i, k in enumerate(keys)},
                                  face_px=z["face_px"] if "face_px" in z.files else None,
                                  sharpness=z["sharpness"] if "sharpness" in z.files else None)
        except (OSError, KeyError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return crops

    def save(self, entry: Path, crops: FaceCrops) -> None:
        """Store `crops`; a cache that cannot be written (full disk, read-only folder) only costs speed."""
        tmp = entry.with_suffix(f".{os.getpid()}.tmp.npz")
        keys = list(crops.crops)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            quality = {} if crops.face_px is None else {"face_px": crops.face_px, "sharpness": crops.sharpness}
            np.savez_compressed(tmp, frames=crops.frames, index=crops.index, track=crops.track, **quality,
                                keys=np.array(keys, dtype=np.float64),
                                **{f"crops{i}": crops.crops[k] for i, k in enumerate(keys)})
            os.replace(tmp, entry)
        except OSError as exc:
            log.warning("crop cache not written (%s): %s", entry, exc)
            tmp.unlink(missing_ok=True)
