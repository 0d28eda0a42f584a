"""Find, download and verify model weight files.

Weights never ship with the project: each registry entry names the file, its public address and its sha256.
They are looked up in the weights folder (`--weights-dir`, else `$DFSTREAM_WEIGHTS`, else the user cache),
downloaded there when missing and the network allows, and always checked against the published hash.
`$DFSTREAM_WEIGHTS_URL` points every direct download at a mirror (`<mirror>/<file name>`): an organisation's own
copy of the files, an offline site's file server. The published sha256 is checked all the same, so a mirror can
only serve the very files the registry names.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import BaseModel, ConfigDict

WEIGHTS_ENV = "DFSTREAM_WEIGHTS"
WEIGHTS_URL_ENV = "DFSTREAM_WEIGHTS_URL"  # a mirror: direct downloads come from <mirror>/<file name>
DOWNLOAD_TIMEOUT_S = 60.0
HF_ENDPOINT_ENV = "HF_ENDPOINT"  # huggingface_hub's own setting for where the hub is
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HASH_CHUNK_BYTES = 1 << 20


class WeightsUnavailable(RuntimeError):
    """The weight file is missing and could not be fetched; the message says what to download and where."""


class ChecksumMismatch(RuntimeError):
    """A weight file's sha256 is not the published one: corrupt, truncated or a different file."""


class WeightsSource(BaseModel):
    """Where a model's weights come from: a direct URL, or a file in a Hugging Face hub repository.

    `md5` is for publishers that only give an md5 (Keras applications' `file_hash`): recording their hash beats
    recording none. `hint` tells the user how to obtain a file that has no public address.
    `revision` pins a hub file to one commit of its repository (a branch name would follow later uploads).
    `remote_name` is the file's name in the hub repository when the local `filename` differs from it (several
    models' `model.safetensors` kept apart in subfolders: filename "GenD_CLIP_L_14/model.safetensors").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    filename: str
    url: str | None = None
    hf_repo: str | None = None
    sha256: str | None = None
    md5: str | None = None
    hint: str | None = None
    revision: str | None = None
    remote_name: str | None = None

    @property
    def hub_filename(self) -> str:
        return self.remote_name or self.filename

    @property
    def hash_status(self) -> str:
        """'sha256 pinned', 'md5 pinned' or 'unverified' (a pinned hub revision noted): what `models list` shows."""
        if self.sha256:
            return "sha256 pinned"
        if self.md5:
            return "md5 pinned"
        return "unverified (revision pinned)" if self.revision else "unverified"

    @property
    def download_url(self) -> str | None:
        """Where a direct download comes from: the published address, or the file on `$DFSTREAM_WEIGHTS_URL`."""
        mirror = os.environ.get(WEIGHTS_URL_ENV, "").strip()
        if self.url and mirror:
            return f"{mirror.rstrip('/')}/{self.filename}"
        return self.url

    @property
    def address(self) -> str:
        if self.url:
            return self.download_url or self.url
        if self.hf_repo:
            at = f" at revision {self.revision}" if self.revision else ""
            return f"huggingface hub repo {self.hf_repo}{at}, file {self.hub_filename}"
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


def partial_path(dest: Path) -> Path:
    """Where an unfinished download of `dest` lives: a fixed name beside it, so a later run can resume it."""
    return dest.with_name(f".{dest.name}.part")


def _progress_bar(total: int | None, initial: int, name: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                disable=not enabled, leave=False)


def _download_url(url: str, dest: Path, progress: bool = False) -> None:
    """Stream `url` into `dest`, resuming an earlier partial download with an HTTP Range request.

    Bytes go to `partial_path(dest)` (locked while written, so two processes never append to one file) and take the
    final name only once the server's full length has arrived. A server that ignores Range (200 instead of 206)
    restarts the file from zero; 416 (range not satisfiable) means the partial file is already whole.
    The caller verifies the hash: a resumed file that does not match is deleted there, partial part included.
    """
    import fcntl

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    with open(part, "ab") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        have = out.seek(0, os.SEEK_END)
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            resp = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code != 416 or not have:
                raise
            os.replace(part, dest)  # nothing left to fetch; the hash check decides if it is right
            return
        with resp:
            if have and resp.status != 206:  # the server sent the whole file again
                out.truncate(0)
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with _progress_bar(total, have, dest.name, progress) as bar:
                while chunk := resp.read(HASH_CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
            out.flush()
            size = out.tell()
        if total is not None and size != total:
            raise OSError(f"download of {url} stopped at {size} of {total} bytes; run again to resume")
        os.replace(part, dest)


def _download_hf(source: WeightsSource, dest: Path, progress: bool = False) -> None:
    """A hub file at the pinned revision through huggingface_hub (which resumes and shows progress itself)."""
    from huggingface_hub import hf_hub_download  # optional dependency, only for hub-hosted weights
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    (enable_progress_bars if progress else disable_progress_bars)()
    cached = hf_hub_download(repo_id=source.hf_repo, filename=source.hub_filename, revision=source.revision)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(dest)
    shutil.copyfile(cached, tmp)
    os.replace(tmp, dest)


def fetch(
    source: WeightsSource, weights_dir: Path | None = None, allow_download: bool = True, progress: bool = False
) -> Path:
    """Return the verified local path of `source`, downloading it into `weights_dir` when missing.

    An interrupted download is resumed from its partial file on the next call; `progress` shows a progress bar
    (what `models pull` asks for)."""
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
            _download_url(source.download_url or source.url, path, progress)
        else:
            _download_hf(source, path, progress)
    except (urllib.error.URLError, OSError, ImportError, ValueError) as exc:
        raise WeightsUnavailable(f"could not download {source.filename} ({exc}). {how}") from exc
    try:
        verify(path, source.sha256, source.md5)
    except ChecksumMismatch:
        path.unlink(missing_ok=True)  # a resumed file that is wrong must be fetched whole next time
        raise
    return path


def probe_url(source: WeightsSource) -> str | None:
    """The address a download of `source` would ask first: the direct (or mirrored) URL, or the hub's resolve URL."""
    if source.url:
        return source.download_url
    if source.hf_repo:
        endpoint = os.environ.get(HF_ENDPOINT_ENV, "").strip() or HF_DEFAULT_ENDPOINT
        return f"{endpoint.rstrip('/')}/{source.hf_repo}/resolve/{source.revision or 'main'}/{source.hub_filename}"
    return None


def unreachable(source: WeightsSource, timeout: float) -> str | None:
    """Why `source` cannot be downloaded now (None: its host answered), found out within `timeout` seconds.

    One HEAD request, run on a daemon thread joined for `timeout`: the socket timeout alone bounds neither the name
    lookup (getaddrinfo has none) nor a host that takes the connection and never answers, and a caller that must
    start promptly (`--model auto`) cannot wait the download's own timeout for either. Any HTTP answer but 404
    counts as reachable (hosts that refuse HEAD still serve GET); the download itself then runs with its usual
    timeout and progress bar."""
    import threading

    url = probe_url(source)
    if url is None:
        return "it has no public address"
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                outcome.append(None)
        except urllib.error.HTTPError as exc:
            outcome.append(f"{url} answered {exc.code} {exc.reason}" if exc.code == 404 else None)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            outcome.append(f"{url} is unreachable ({getattr(exc, 'reason', exc)})")

    thread = threading.Thread(target=ask, name="weights-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"{url} did not answer within {timeout:g} s"
    return outcome[0]
