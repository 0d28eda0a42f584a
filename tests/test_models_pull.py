"""`models pull`: download with progress, resume a partial file with an HTTP Range request, verify the hash.

A local HTTP server stands in for the public hosts: it serves ../shared/weights/mesonet (real published files with
their published sha256), honours `Range: bytes=N-` with 206 Partial Content, records every request's Range header
and can be told to drop the connection part-way, as a flaky network would.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
from pathlib import Path

import pytest

from engines.registry import MODELS, build_engine, get_entry, model_card, model_files, pull
from engines.weights import ChecksumMismatch, WeightsUnavailable, fetch, partial_path, sha256_of

from support.shared import MESONET_WEIGHTS

NAME = "meso4-df"
FILE = MESONET_WEIGHTS / "Meso4_DF.h5"
RANGE = re.compile(r"bytes=(\d+)-$")


class RangeHandler(http.server.BaseHTTPRequestHandler):
    root: Path
    log: list[str | None]
    cut_after: int | None = None  # bytes of body to send before dropping the connection
    honour_range = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.root / self.path.lstrip("/")
        header = self.headers.get("Range")
        self.log.append(header)
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        match = RANGE.match(header or "")
        if match and self.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None:
            self.wfile.write(body[: self.cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    handler = type("Handler", (RangeHandler,), {"root": MESONET_WEIGHTS, "log": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def source_at(base: str):
    w = get_entry(NAME).weights
    return w.model_copy(update={"url": base + w.filename})


def test_resumes_a_partial_download_with_a_range_request(server, tmp_path):
    handler, base = server
    data = FILE.read_bytes()
    part = partial_path(tmp_path / FILE.name)
    part.write_bytes(data[: len(data) // 3])
    path = fetch(source_at(base), tmp_path)
    assert handler.log == [f"bytes={len(data) // 3}-"]
    assert sha256_of(path) == get_entry(NAME).weights.sha256 and not part.exists()


def test_interrupted_download_keeps_its_part_then_resumes(server, tmp_path):
    handler, base = server
    handler.cut_after = 10_000
    with pytest.raises(WeightsUnavailable, match=r"stopped at 10000 of \d+ bytes; run again to resume"):
        fetch(source_at(base), tmp_path)
    part = partial_path(tmp_path / FILE.name)
    assert part.stat().st_size == 10_000 and not (tmp_path / FILE.name).exists()
    handler.cut_after = None
    path = fetch(source_at(base), tmp_path)
    assert handler.log == [None, "bytes=10000-"]
    assert sha256_of(path) == get_entry(NAME).weights.sha256


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    handler, base = server
    handler.honour_range = False
    partial_path(tmp_path / FILE.name).write_bytes(b"stale bytes from another file")
    path = fetch(source_at(base), tmp_path)
    assert sha256_of(path) == get_entry(NAME).weights.sha256  # the 200 reply replaced the stale part


def test_complete_partial_file_is_taken_after_a_416(server, tmp_path):
    handler, base = server
    partial_path(tmp_path / FILE.name).write_bytes(FILE.read_bytes())
    path = fetch(source_at(base), tmp_path)
    assert handler.log == [f"bytes={FILE.stat().st_size}-"] and sha256_of(path) == get_entry(NAME).weights.sha256


def test_corrupt_partial_file_fails_the_hash_and_is_removed(server, tmp_path):
    handler, base = server
    data = FILE.read_bytes()
    partial_path(tmp_path / FILE.name).write_bytes(b"\x00" * 1000 + data[1000:5000])  # right length, wrong bytes
    with pytest.raises(ChecksumMismatch, match="sha256"):
        fetch(source_at(base), tmp_path)
    assert not (tmp_path / FILE.name).exists() and not partial_path(tmp_path / FILE.name).exists()
    assert sha256_of(fetch(source_at(base), tmp_path)) == get_entry(NAME).weights.sha256  # whole again next time


def test_pull_shows_progress_verifies_and_the_engine_builds(server, tmp_path, monkeypatch, capsys):
    _, base = server
    entry = get_entry(NAME)
    monkeypatch.setitem(MODELS, NAME, entry.model_copy(update={"weights": source_at(base)}))
    paths = pull(NAME, tmp_path, progress=True)
    assert paths == {"weights": tmp_path / FILE.name}
    err = capsys.readouterr().err
    from tqdm import tqdm

    total = tqdm.format_sizeof(FILE.stat().st_size, divisor=1024)  # the bar's "done/total" byte counter
    assert FILE.name in err and f"/{total}" in err
    assert build_engine(NAME, weights_dir=tmp_path, allow_download=False).name == NAME


def test_pull_of_an_unreachable_file_names_address_and_place(tmp_path, monkeypatch):
    entry = get_entry("effb4-ffpp")
    w = entry.weights.model_copy(update={"url": "http://127.0.0.1:9/" + entry.weights.filename})
    monkeypatch.setitem(MODELS, "effb4-ffpp", entry.model_copy(update={"weights": w}))
    with pytest.raises(WeightsUnavailable) as err:
        pull("effb4-ffpp", tmp_path, progress=False)
    assert "127.0.0.1:9/EfficientNetB4_FFPP_bestval-" in str(err.value) and str(tmp_path) in str(err.value)


def test_model_files_and_cards_cover_every_new_model():
    assert set(model_files("effb4-ensemble-dfdc")) == {"weights", "effb4st", "effb4att", "effb4attst"}
    assert set(model_files("gend-clip-l14")) == {"weights", "config"}
    names = [n for n in MODELS if n.startswith(("effb4", "gend-"))]
    assert len(names) == 13
    for name in names:
        card = model_card(name)
        assert all(card[k] != "-" for k in ("card / paper", "trained on", "licence", "backends")), card
        assert card["hash"] in ("sha256 pinned", "unverified", "weights sha256 pinned; config unverified (revision pinned)")
    assert model_card("xception-140k")["hash"] == "unverified"
    assert os.path.basename(model_card("effb4-dfdc")["address"]) == get_entry("effb4-dfdc").weights.filename
