"""The real `dfstream serve` command in a subprocess, with its default backend (auto: ONNX Runtime on this CPU).

Every other live test builds the app in-process with torch engines; this one covers what only the command does:
argument parsing, the config, engine conversion, the detector, aiohttp's run_app and its signal handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.registry import DEFAULT_MODEL

from support.shared import FFPP, MESONET_WEIGHTS
from support.parts import needs
from support.live_server import collect, free_port

REPO = Path(__file__).resolve().parents[1]
CLIP = FFPP / "fake" / "Deepfakes_519_515.mp4"
STREAM = CLIP.stem  # serve names a file source after its stem
LISTEN_TIMEOUT_S = 300  # the first run exports the ONNX model and loads MTCNN on a shared, slow CPU
EXIT_TIMEOUT_S = 30

pytestmark = [pytest.mark.slow, needs("the shared clip and MesoNet weights",
                                     None if CLIP.exists() and (MESONET_WEIGHTS / "Meso4_F2F.h5").exists()
                                     else f"{CLIP} or {MESONET_WEIGHTS} not found")]


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory) -> Path:
    """One engine cache for the module: the second serve reuses the first one's ONNX export."""
    return tmp_path_factory.mktemp("serve-engines")


@contextlib.contextmanager
def serving(tmp_path: Path, cache: Path) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    """`python -m stream serve` on the clip, looping, until it listens; always stopped by its PID afterwards."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "DFSTREAM_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "stream", "serve", "--source", str(CLIP), "--loop", "--weights-dir",
           str(MESONET_WEIGHTS), "--port", str(port), "--data-dir", str(tmp_path / "data")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        while not _listening(port):
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"serve not listening after {LISTEN_TIMEOUT_S} s:\n{log.read_text()}"
            time.sleep(0.5)
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(EXIT_TIMEOUT_S)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen, sig: signal.Signals, log: Path) -> None:
    """Send `sig` and expect the clean exit aiohttp's run_app gives on SIGINT and SIGTERM: status 0, no traceback."""
    proc.send_signal(sig)
    try:
        code = proc.wait(EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve still running {EXIT_TIMEOUT_S} s after {sig.name}:\n{log.read_text()}")
    text = log.read_text()
    assert code == 0, f"serve exited with {code} on {sig.name}:\n{text}"
    assert "Traceback" not in text, text


def test_serve_streams_overlays_with_the_default_backend_and_stops_on_sigterm(tmp_path, engine_cache):
    with serving(tmp_path, engine_cache) as (proc, port, log):
        def enough(msgs: list[dict]) -> bool:
            faces = any(m["type"] == "overlay" and m["faces"] for m in msgs)
            # a heartbeat with a measured rate (the statuses pushed on each state change come before any frame)
            return faces and any(m["type"] == "status" and m["state"] == "streaming" and m["fps"] > 0 for m in msgs)

        msgs = asyncio.run(collect(f"ws://127.0.0.1:{port}/ws", enough, timeout=120))
        assert enough(msgs), f"{[m['type'] for m in msgs]}\n{log.read_text()}"
        overlays = [m for m in msgs if m["type"] == "overlay" and m["faces"]]
        assert {m["stream"] for m in msgs if m["type"] in ("overlay", "status")} == {STREAM}
        for overlay in overlays:
            for face in overlay["faces"]:
                assert len(face["box"]) == 4 and face["box"][0] < face["box"][2] and face["box"][1] < face["box"][3]
                assert 0.0 <= face["engines"][DEFAULT_MODEL] <= 1.0  # the default model ran
                assert face["verdict"] == "low-quality" or 0.0 <= face["score"] <= 1.0
        assert any(m["type"] == "status" and m["state"] == "streaming" and m["fps"] > 0 for m in msgs)
        from engines.backends import choose

        if choose("auto") == "onnx":  # no TensorRT, no CUDA: serve ran the model's ONNX export from the cache
            assert list(engine_cache.glob(f"{DEFAULT_MODEL}-*.onnx")), sorted(p.name for p in engine_cache.iterdir())
        assert f"open http://127.0.0.1:{port}/" in log.read_text()
        _stop(proc, signal.SIGTERM, log)


def test_serve_stops_cleanly_on_sigint(tmp_path, engine_cache):
    with serving(tmp_path, engine_cache) as (proc, port, log):
        msgs = asyncio.run(collect(f"ws://127.0.0.1:{port}/ws",
                                   lambda ms: any(m["type"] == "status" and m["state"] == "streaming" for m in ms),
                                   timeout=120))
        assert any(m["type"] == "status" for m in msgs), log.read_text()
        _stop(proc, signal.SIGINT, log)
