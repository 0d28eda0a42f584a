"""Find, download and verify model weight files.

Weights never ship with the project: each registry entry names the file, its public address and its sha256.
They are looked up in the weights folder (`--weights-dir`, else `$DFSTREAM_WEIGHTS`, else the user cache),
downloaded there when missing and the network allows, and always checked against the published hash.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import BaseModel, ConfigDict

WEIGHTS_ENV = "DFSTREAM_WEIGHTS"
DOWNLOAD_TIMEOUT_S = 60.0
HASH_CHUNK_BYTES = 1 << 20


class WeightsUnavailable(RuntimeError):
    """The weight file is missing and could not be fetched; the message says what to download and where."""


class ChecksumMismatch(RuntimeError):
    """A weight file's sha256 is not the published one: corrupt, truncated or a different file."""


class WeightsSource(BaseModel):
    """Where a model's weights come from: a direct URL, or a file in a Hugging Face hub repository.

    `md5` is for publishers that only give an md5 (Keras applications' `file_hash`): recording their hash beats
    recording none. `hint` tells the user how to obtain a file that has no public address.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    filename: str
    url: str | None = None
    hf_repo: str | None = None
    sha256: str | None = None
    md5: str | None = None
    hint: str | None = None

    @property
    def address(self) -> str:
        if self.url:
            return self.url
        if self.hf_repo:
            return f"huggingface hub repo {self.hf_repo}, file {self.filename}"
        return "(no public address)"


def default_weights_dir() -> Path:
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "dfstream" / "weights"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str | None, md5: str | None = None) -> None:
    """Check the sha256 and, where the publisher gives one, the md5; either mismatch is a ChecksumMismatch."""
    for algo, want, digest in (("sha256", expected, sha256_of), ("md5", md5, md5_of)):
        if want is None:
            continue
        actual = digest(path)
        if actual != want.lower():
            raise ChecksumMismatch(
                f"{path}: {algo} is {actual}, but the published file has {want}. "
                "Delete it and download it again."
            )


def _download_url(url: str, dest: Path) -> None:
    """Stream `url` into `dest` atomically (a partial download never takes the final name)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            shutil.copyfileobj(resp, out, HASH_CHUNK_BYTES)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download_hf(repo: str, filename: str, dest: Path) -> None:
    from huggingface_hub import hf_hub_download  # optional dependency, only for hub-hosted weights

    cached = hf_hub_download(repo_id=repo, filename=filename)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, dest)


def fetch(source: WeightsSource, weights_dir: Path | None = None, allow_download: bool = True) -> Path:
    """Return the verified local path of `source`, downloading it into `weights_dir` when missing."""
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    path = folder / source.filename
    if path.is_file():
        verify(path, source.sha256, source.md5)
        return path
    save = f"save it as {path} (or pass --weights-dir / set ${WEIGHTS_ENV})."
    how = f"{source.hint} Then {save}" if source.hint else f"Download {source.address} and {save}"
    if not allow_download or not (source.url or source.hf_repo):
        raise WeightsUnavailable(f"weights {source.filename} not found in {folder}. {how}")
    try:
        if source.url:
            _download_url(source.url, path)
        else:
            _download_hf(source.hf_repo, source.filename, path)  # type: ignore[arg-type]
    except (urllib.error.URLError, OSError, ImportError, ValueError) as exc:
        raise WeightsUnavailable(f"could not download {source.filename} ({exc}). {how}") from exc
    try:
        verify(path, source.sha256, source.md5)
    except ChecksumMismatch:
        path.unlink(missing_ok=True)
        raise
    return path
