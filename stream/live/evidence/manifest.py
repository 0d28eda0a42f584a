"""Chain of custody: `manifest.json` beside an alert's evidence, naming every file's sha256 and size with where
the video came from (the redacted source), which models judged it (names, weights' sha256, calibration) and which
dfstream wrote it.

The manifest cannot hash itself, so its own sha256 travels in the alert's messages (the `end` message's
`custody.manifest_sha256`, kept in the alert log and on Redis): `verify` checks the files against the manifest
and, given that hash, the manifest against the message. Nothing here imports PyAV or torch, so `dfstream alerts
verify` stays light.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "dfstream-evidence/1"
MANIFEST = "manifest.json"  # = names.MANIFEST (kept literal: this module imports nothing of the package)
HASH_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_entries(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: {"sha256": sha256_of(folder / n), "size": (folder / n).stat().st_size}
            for n in names if (folder / n).is_file()}


def write_manifest(folder: Path, record: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Hash `names` in `folder`, write the manifest atomically (fsynced), and return the custody summary for the
    alert message: the manifest itself plus its own sha256."""
    manifest = {"format": FORMAT, **record, "files": file_entries(folder, names)}
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    tmp = folder / (MANIFEST + ".part")
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)
    return {**manifest, "manifest_sha256": hashlib.sha256(body).hexdigest()}


@dataclass(frozen=True, slots=True)
class Finding:
    file: str
    problem: str  # "changed", "missing", "size"

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


class VerifyError(ValueError):
    """The evidence cannot be checked at all (no folder, no or unreadable manifest)."""


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise VerifyError(f"{path}: no manifest (the recording is not complete, or this is not an alert's folder)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VerifyError(f"{path}: unreadable manifest ({exc})") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise VerifyError(f"{path}: not a {FORMAT} manifest")
    return manifest


def verify(folder: Path, manifest_sha256: str | None = None) -> list[Finding]:
    """Every file that differs from the manifest (and the manifest, if it differs from `manifest_sha256`)."""
    manifest = read_manifest(folder)
    found = []
    if manifest_sha256 is not None and sha256_of(folder / MANIFEST) != manifest_sha256:
        found.append(Finding(MANIFEST, "changed"))
    for name, entry in sorted(manifest["files"].items()):
        path = folder / name
        if Path(name).name != name:
            found.append(Finding(name, "not a plain file name"))
        elif not path.is_file():
            found.append(Finding(name, "missing"))
        elif path.stat().st_size != entry.get("size"):
            found.append(Finding(name, f"size {path.stat().st_size} != {entry.get('size')}"))
        elif sha256_of(path) != entry.get("sha256"):
            found.append(Finding(name, "changed"))
    return found
