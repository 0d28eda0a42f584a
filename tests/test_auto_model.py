"""`--model auto` (engines/auto.py): what it picks on this CPU, offline with only MesoNet present, and from a
stand-in download server holding EfficientNet-B4-shaped weights.

The stand-in is a local HTTP server speaking plain HTTP (HEAD and GET). It holds random weights in the authors'
layout (efficientnet_pytorch's B4 without `_fc` under `efficientnet.*`, and `classifier.*`, as polimi-ispl/
icpr2020dfdc `architectures/fornet.py` saves them), and the registry is pointed at it: `$DFSTREAM_WEIGHTS_URL`
(the documented mirror setting) for the address, and the entry's file name and sha256 for those random weights
(the published file name carries the published file's sha256, which random weights cannot have). MesoNet's
published file comes from ../shared/weights/mesonet through a symbolic link in the test's own weights folder.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.auto import CPU_MODEL, FALLBACK_RANKING, GPU_MODEL, PROBE_TIMEOUT_S, plan, resolve
from engines.registry import MODELS, get_entry
from engines.weights import WEIGHTS_URL_ENV, WeightsSource, partial_path, sha256_of
from stream.cli.common import warn_auto
from stream.live.assembly import EngineOptions, assemble

from support.shared import MESONET_WEIGHTS
from support.parts import needs

REPO = Path(__file__).resolve().parents[1]
STAND_IN = "EfficientNetB4_DFDC_stand-in.pth"
MESO_FILES = {"meso4-f2f": "Meso4_F2F.h5", "mesoinception-f2f": "MesoInception_F2F.h5", "meso4-df": "Meso4_DF.h5",
              "mesoinception-df": "MesoInception_DF.h5"}

pytestmark = needs("the shared MesoNet weights", None if (MESONET_WEIGHTS / "Meso4_F2F.h5").exists()
                   else f"{MESONET_WEIGHTS} not found")


class Files(http.server.BaseHTTPRequestHandler):
    root: Path
    log: list[tuple[str, str]]

    def _send(self, body: bool) -> None:
        self.log.append((self.command, self.path))
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._send(True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(False)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[Path, str]:
    """Random EfficientNetB4 weights in the authors' layout, saved as the stand-in's one file; (path, sha256)."""
    efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")
    torch.manual_seed(0)
    net = efficientnet_pytorch.EfficientNet.from_name("efficientnet-b4")
    del net._fc
    head = torch.nn.Linear(1792, 1)
    state = {**{f"efficientnet.{k}": v for k, v in net.state_dict().items()},
             **{f"classifier.{k}": v for k, v in head.state_dict().items()}}
    path = tmp_path_factory.mktemp("stand-in") / STAND_IN
    torch.save(state, path)
    return path, sha256_of(path)


@pytest.fixture
def server(served):
    handler = type("Handler", (Files,), {"root": served[0].parent, "log": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler.log, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def point_registry(monkeypatch, base: str, sha256: str) -> None:
    """The CPU model's entry: the stand-in's file name and sha256; its address through the mirror setting."""
    entry = get_entry(CPU_MODEL)
    source = WeightsSource(filename=STAND_IN, url=entry.weights.url, sha256=sha256)
    monkeypatch.setitem(MODELS, CPU_MODEL, entry.model_copy(update={"weights": source}))
    monkeypatch.setenv(WEIGHTS_URL_ENV, base)


def weights_dir(tmp_path: Path, *models: str) -> Path:
    """A weights folder holding only these MesoNet files (symbolic links to the shared ones)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in models:
        (folder / MESO_FILES[name]).symlink_to(MESONET_WEIGHTS / MESO_FILES[name])
    return folder


@pytest.mark.slow  # 21 s: builds and runs the CPU model (pytest --fast --durations=40, 2026-12-07)
def test_auto_downloads_the_cpu_model_from_the_stand_in_checks_it_and_runs_it(monkeypatch, tmp_path, served, server):
    log, base = server
    _, sha = served
    point_registry(monkeypatch, base, sha)
    folder = weights_dir(tmp_path, "meso4-f2f")
    choice = resolve("cpu", folder)
    assert (choice.picked, choice.wanted, choice.device, choice.warning) == (CPU_MODEL, CPU_MODEL, "cpu", None)
    assert "runs live on this CPU" in choice.why
    assert ("GET", f"/{STAND_IN}") in log and ("HEAD", f"/{STAND_IN}") in log
    assert sha256_of(folder / STAND_IN) == sha
    built = assemble(None, EngineOptions(weights_dir=folder, backend="torch"))  # the default is auto
    assert built.auto == choice and [e.name for e in built.engines] == [CPU_MODEL]
    assert built.engines[0].weights_sha256 == sha
    p = built.engines[0].predict(np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3), dtype=np.uint8))
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))
    again = resolve("cpu", folder, offline=True)  # present now: no network needed
    assert again.picked == CPU_MODEL and again.warning is None


def test_a_wrong_hash_is_refused_and_nothing_is_left_behind(monkeypatch, tmp_path, server):
    log, base = server
    point_registry(monkeypatch, base, "0" * 64)
    folder = weights_dir(tmp_path, "meso4-f2f")
    choice = resolve("cpu", folder)
    assert ("GET", f"/{STAND_IN}") in log  # it was downloaded, then refused
    assert choice.picked == "meso4-f2f" and "sha256" in choice.warning and "download was removed" in choice.warning
    assert sorted(p.name for p in folder.iterdir()) == ["Meso4_F2F.h5"]
    assert not partial_path(folder / STAND_IN).exists()


def test_offline_with_only_mesonet_present_falls_back_and_says_how_to_get_the_strong_model(tmp_path, capsys):
    folder = weights_dir(tmp_path, *MESO_FILES)
    choice = resolve("cpu", folder, offline=True)
    assert choice.picked == FALLBACK_RANKING[0] == "meso4-f2f" and choice.wanted == CPU_MODEL
    assert choice.fell_back and "weaker detector" in choice.warning and "--offline" in choice.warning
    assert f"dfstream models pull {CPU_MODEL} --weights-dir {folder}" in choice.warning
    warn_auto(choice)
    assert f"WARNING: {choice.warning}" in capsys.readouterr().err
    on_gpu = resolve("cuda", folder, offline=True)
    assert on_gpu.picked == "meso4-f2f" and f"dfstream models pull {GPU_MODEL}" in on_gpu.warning
    assert CPU_MODEL in on_gpu.warning  # the GPU tried the CPU's pick too


def test_the_fallback_follows_the_robustness_ranking(tmp_path):
    folder = weights_dir(tmp_path, "meso4-df", "mesoinception-f2f", "mesoinception-df")
    assert resolve("cpu", folder, offline=True).picked == "mesoinception-f2f"


def test_no_weights_at_all_offline_is_an_error_that_names_the_pull(tmp_path):
    from engines.weights import WeightsUnavailable

    with pytest.raises(WeightsUnavailable, match=f"dfstream models pull {CPU_MODEL}"):
        resolve("cpu", weights_dir(tmp_path), offline=True)


def test_a_host_that_never_answers_does_not_hold_the_start(monkeypatch, tmp_path):
    """A host that takes the connection and never answers (a captive portal, a black-holing proxy): auto gives up
    after the probe's timeout, not the download's minute."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are accepted by the kernel and then left unanswered
    try:
        monkeypatch.setenv(WEIGHTS_URL_ENV, f"http://127.0.0.1:{silent.getsockname()[1]}/")
        folder = weights_dir(tmp_path, "meso4-f2f")
        began = time.monotonic()
        choice = resolve("cpu", folder)
        took = time.monotonic() - began
    finally:
        silent.close()
    assert choice.picked == "meso4-f2f" and "did not answer" in choice.warning
    assert took < PROBE_TIMEOUT_S + 3.0, took


def test_auto_is_a_model_of_its_own(tmp_path):
    folder = weights_dir(tmp_path, "meso4-f2f")
    with pytest.raises(ValueError, match="alone"):
        assemble(["auto", "meso4-df"], EngineOptions(weights_dir=folder, offline=True))
    with pytest.raises(ValueError, match="--weights"):
        assemble(["auto"], EngineOptions(weights_dir=folder, offline=True), weights_file=folder / "Meso4_F2F.h5")


def test_plan_on_this_cpu(tmp_path, served):
    folder = weights_dir(tmp_path, "meso4-f2f")
    planned = plan("cpu", folder)
    assert planned.picked == CPU_MODEL and "auto downloads them on first use" in planned.why
    assert "meso4-f2f" in planned.why
    assert plan("cuda", folder).picked == GPU_MODEL


@pytest.mark.parametrize("device, picked", [("cpu", CPU_MODEL), ("cuda", GPU_MODEL)])
def test_models_list_marks_what_auto_picks_and_why(tmp_path, device, picked):
    folder = weights_dir(tmp_path, "meso4-f2f")
    out = subprocess.run([sys.executable, "-m", "stream", "models", "list", "--json", "--weights-dir", str(folder),
                          "--device", device], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    marked = [row for row in json.loads(out.stdout) if "auto" in row]
    assert [row["name"] for row in marked] == [picked]
    assert "on first use" in marked[0]["auto"]
