"""Weight fetching: the real download code against a local HTTP server, checksums, and offline errors."""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from engines.registry import build_engine, get_entry
from engines.weights import (ChecksumMismatch, WeightsSource, WeightsUnavailable, default_weights_dir, fetch,
                             sha256_of)

from support.shared import MESONET_WEIGHTS


@pytest.fixture
def weights_server():
    """Serve ../shared/weights/mesonet over HTTP on a free loopback port, as the public host would."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(MESONET_WEIGHTS))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def entry_source(name: str, base_url: str) -> WeightsSource:
    w = get_entry(name).weights
    return w.model_copy(update={"url": base_url + w.filename})


def test_registry_hashes_match_the_published_files():
    for name in ("meso4-df", "meso4-f2f", "mesoinception-df", "mesoinception-f2f"):
        w = get_entry(name).weights
        assert sha256_of(MESONET_WEIGHTS / w.filename) == w.sha256


def test_download_verifies_and_is_reused(weights_server, tmp_path):
    source = entry_source("meso4-df", weights_server)
    path = fetch(source, tmp_path)
    assert path == tmp_path / "Meso4_DF.h5" and sha256_of(path) == source.sha256
    assert not list(tmp_path.glob(".*part"))  # no partial file left behind
    mtime = path.stat().st_mtime_ns
    assert fetch(source, tmp_path) == path and path.stat().st_mtime_ns == mtime
    engine = build_engine("meso4-df", weights_dir=tmp_path, allow_download=False)
    assert engine.name == "meso4-df"


def test_download_with_wrong_hash_is_refused_and_removed(weights_server, tmp_path):
    source = entry_source("meso4-df", weights_server).model_copy(update={"sha256": "0" * 64})
    with pytest.raises(ChecksumMismatch, match="sha256"):
        fetch(source, tmp_path)
    assert not (tmp_path / "Meso4_DF.h5").exists()


def test_corrupt_local_file_is_refused(tmp_path):
    shutil.copy(MESONET_WEIGHTS / "Meso4_DF.h5", tmp_path / "Meso4_DF.h5")
    with open(tmp_path / "Meso4_DF.h5", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ChecksumMismatch, match="download it again"):
        fetch(get_entry("meso4-df").weights, tmp_path)


def test_unreachable_host_says_what_to_download(tmp_path):
    source = get_entry("meso4-f2f").weights.model_copy(update={"url": "http://127.0.0.1:9/Meso4_F2F.h5"})
    with pytest.raises(WeightsUnavailable) as err:
        fetch(source, tmp_path)
    msg = str(err.value)
    assert "http://127.0.0.1:9/Meso4_F2F.h5" in msg and str(tmp_path / "Meso4_F2F.h5") in msg


def test_offline_missing_names_address_and_place(tmp_path):
    with pytest.raises(WeightsUnavailable) as err:
        fetch(get_entry("mesoinception-df").weights, tmp_path, allow_download=False)
    assert "raw.githubusercontent.com/DariusAf/MesoNet/master/weights/MesoInception_DF.h5" in str(err.value)


def test_env_var_sets_default_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DFSTREAM_WEIGHTS", str(tmp_path))
    assert default_weights_dir() == tmp_path
    monkeypatch.delenv("DFSTREAM_WEIGHTS")
    assert default_weights_dir().parts[-2:] == ("dfstream", "weights")
