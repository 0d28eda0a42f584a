"""Labelled datasets for `eval` (and later `train`): find the media and say which are real and which are fake.

Two layouts are recognised:
- **real/fake**: `DATASET/real/**` and `DATASET/fake/**`, videos or images, nested folders allowed. A folder
  directly under `fake/` names the manipulation method (`fake/Deepfakes/...`); files directly in `fake/` get the
  method `fake`.
- **FaceForensics++**: `original_sequences/<source>/<compression>/videos/*` are real and
  `manipulated_sequences/<method>/<compression>/videos/*` are fake with that method. The `masks` folders FF++
  ships beside the compressions are masks, not fakes, and are skipped.

Labels and methods come from folder structure only, never from file names, and they live only in the
`DatasetItem`s: a model is given decoded pixels and nothing else, so no part of a path can leak the label into a
score (the leak found in seed card 000's public code).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stream.jobs.scan import IMAGE_SUFFIXES

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".wma", ".aiff", ".aif"})
VOICE_SUFFIXES = AUDIO_SUFFIXES | VIDEO_SUFFIXES  # `eval --modality voice`: audio files and videos' audio tracks
REAL, FAKE = 0, 1  # the project's label convention: 1 = fake, every score is p(fake)
REAL_METHOD = "real"
DEFAULT_FAKE_METHOD = "fake"  # files directly in fake/, where no folder names a method
REAL_DIR, FAKE_DIR = "real", "fake"
FFPP_REAL_DIR, FFPP_FAKE_DIR = "original_sequences", "manipulated_sequences"
FFPP_VIDEOS_DIR = "videos"
FFPP_NOT_MEDIA = frozenset({"masks"})  # manipulated_sequences/<method>/masks/videos holds the blending masks

Layout = Literal["real-fake", "ffpp"]


class DatasetError(ValueError):
    """The folder is not a usable labelled dataset; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class DatasetItem:
    """One media file. `group` is the video it belongs to (a video file is its own group; images in a folder
    below the class folder are frames of one video): video-level metrics and train/validation splits use it."""

    path: Path
    label: int
    method: str
    group: str


@dataclass(frozen=True)
class Dataset:
    root: Path
    layout: Layout
    items: tuple[DatasetItem, ...]

    @property
    def methods(self) -> list[str]:
        return sorted({i.method for i in self.items if i.label == FAKE})

    def counts(self) -> dict[str, int]:
        by_label = Counter(i.label for i in self.items)
        return {"files": len(self.items), "real": by_label[REAL], "fake": by_label[FAKE],
                "videos": len({i.group for i in self.items})}


def discover(root: str | Path, require_fakes: bool = True, suffixes: frozenset[str] = MEDIA_SUFFIXES) -> Dataset:
    """Find the labelled media under `root`; raises DatasetError when it is missing, unrecognised or one-sided.

    `require_fakes=False` accepts real-only data, for training with self-blended pseudo-fakes (`train --sbi`).
    `suffixes` are the files that count as media (`VOICE_SUFFIXES` for voices).
    """
    root = Path(os.path.abspath(root))  # reports are read away from the current folder; symlinks are kept
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if (root / FFPP_REAL_DIR).is_dir() or (root / FFPP_FAKE_DIR).is_dir():
        layout: Layout = "ffpp"
        items = _ffpp_items(root, suffixes)
        where = f"{FFPP_REAL_DIR}/ and {FFPP_FAKE_DIR}/"
    elif (root / REAL_DIR).is_dir() or (root / FAKE_DIR).is_dir():
        layout = "real-fake"
        items = _real_fake_items(root, suffixes)
        where = f"{REAL_DIR}/ and {FAKE_DIR}/"
    else:
        found = ", ".join(sorted(p.name + "/" for p in root.iterdir() if p.is_dir())) or "no folders"
        raise DatasetError(
            f"{root}: unrecognised dataset layout (found {found}); expected {REAL_DIR}/ and {FAKE_DIR}/ folders, "
            f"or FaceForensics++'s {FFPP_REAL_DIR}/ and {FFPP_FAKE_DIR}/")
    if not items:
        raise DatasetError(f"{root}: no media files under {where} (looked for {', '.join(sorted(suffixes))})")
    labels = {i.label for i in items}
    if FAKE not in labels and require_fakes:
        raise DatasetError(f"{root}: no fake media found ({len(items)} real files); eval needs fakes and reals")
    if REAL not in labels:
        raise DatasetError(f"{root}: no real media found ({len(items)} fake files); eval needs fakes and reals")
    return Dataset(root=root, layout=layout, items=tuple(items))


def _media(folder: Path, suffixes: frozenset[str] = MEDIA_SUFFIXES) -> list[Path]:
    """Media files below `folder`, sorted, following symlinks, skipping hidden files and folders."""
    if not folder.is_dir():
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [Path(dirpath) / f for f in filenames
                if not f.startswith(".") and Path(f).suffix.lower() in suffixes]
    return sorted(out)


def _group(path: Path, class_dir: Path, root: Path) -> str:
    """A video is its own group; an image directly in its class folder is too (a still), and images deeper
    down are frames of the video their folder holds."""
    if path.suffix.lower() in VIDEO_SUFFIXES or path.parent == class_dir:
        return path.relative_to(root).as_posix()
    return path.parent.relative_to(root).as_posix()


def _real_fake_items(root: Path, suffixes: frozenset[str]) -> list[DatasetItem]:
    real_dir, fake_dir = root / REAL_DIR, root / FAKE_DIR
    items = [DatasetItem(p, REAL, REAL_METHOD, _group(p, real_dir, root)) for p in _media(real_dir, suffixes)]
    for p in _media(fake_dir, suffixes):
        below = p.relative_to(fake_dir).parts
        if len(below) == 1:
            items.append(DatasetItem(p, FAKE, DEFAULT_FAKE_METHOD, _group(p, fake_dir, root)))
        else:
            items.append(DatasetItem(p, FAKE, below[0], _group(p, fake_dir / below[0], root)))
    return items


def _ffpp_items(root: Path, suffixes: frozenset[str]) -> list[DatasetItem]:
    """`<class dir>/<source or method>/<compression>/videos/<file>`; anything else under them is ignored."""
    items = []
    for class_dir, label in ((root / FFPP_REAL_DIR, REAL), (root / FFPP_FAKE_DIR, FAKE)):
        for p in _media(class_dir, suffixes):
            parts = p.relative_to(class_dir).parts
            if len(parts) != 4 or parts[2] != FFPP_VIDEOS_DIR or parts[1] in FFPP_NOT_MEDIA:
                continue
            method = REAL_METHOD if label == REAL else parts[0]
            items.append(DatasetItem(p, label, method, _group(p, p.parent, root)))
    return items
