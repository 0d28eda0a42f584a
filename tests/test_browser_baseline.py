"""A camera learns its normal live, in real Chromium against the real `dfstream serve` command, started as the
README starts it (`--weights-dir ../shared/weights/mesonet`, no `--model`: `auto`) on a machine where the strong
model cannot be downloaded.

1. `auto` falls back to meso4-f2f quickly, and says so on the console, in the readiness status and on the page,
   naming the command that gets the strong model.
2. The camera is a looped file (`cam.mp4`, a symbolic link to the shared FF++ real clip 519). "Learn normal" for
   1 s is refused, and the tile says why; for 15 s it shows its progress, then the camera's bar and alpha.
3. Afterwards the camera's own real footage raises no alert; when the feed is replaced by the face-swapped clip of
   the same scene (the link now points at Deepfakes_519_515, which meso4-f2f catches: docs/baselines.md), the
   camera raises one.
4. The learned bar survives a restart of serve: the API and a new page show it again.

The download address is a closed port on loopback (`$DFSTREAM_WEIGHTS_URL`), so the download fails at once on
every machine, the internet reachable or not, and nothing is ever written into ../shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.browser import chromium_unavailable, open_browser, screenshot
from support.shared import FFPP, MESONET_WEIGHTS
from support.live_server import free_port
from support.parts import needs
from support.ws_recorder import WsRecorder

REPO = Path(__file__).resolve().parents[1]
REAL = FFPP / "real" / "519.mp4"
FAKE = FFPP / "fake" / "Deepfakes_519_515.mp4"
STREAM = "cam"  # serve names a file source after its stem
LISTEN_TIMEOUT_S = 300  # the first run exports the ONNX model and loads MTCNN on a shared, slow CPU
LEARN_S = 15
NO_ALERT_S = 20.0  # the camera's own real footage after learning, watched for alerts
ALERT_TIMEOUT_S = 120.0  # the swap takes effect when the loop restarts (the clip is 30 s), then k updates
PAGE_TIMEOUT_S = 30.0

pytestmark = [pytest.mark.slow, needs("Chromium (with Playwright)", chromium_unavailable()),
              needs("the shared FF++ pair and MesoNet weights",
                    None if REAL.exists() and FAKE.exists() and (MESONET_WEIGHTS / "Meso4_F2F.h5").exists()
                    else f"{REAL}, {FAKE} or {MESONET_WEIGHTS} not found")]

if chromium_unavailable() is None:
    from playwright.async_api import expect


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    return free_port()


@contextlib.contextmanager
def serving(camera: Path, data: Path, log: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """`python -m stream serve` as the README runs it, until it listens; always stopped by its PID afterwards."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO),
           "DFSTREAM_WEIGHTS_URL": f"http://127.0.0.1:{closed_port()}/"}
    cmd = [sys.executable, "-m", "stream", "serve", "--source", str(camera), "--loop", "--weights-dir",
           str(MESONET_WEIGHTS), "--port", str(port), "--data-dir", str(data)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        while not listening(port):
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"serve not listening after {LISTEN_TIMEOUT_S} s:\n{log.read_text()}"
            time.sleep(0.5)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
        return json.loads(resp.read())


def point(link: Path, target: Path) -> None:
    """Make `link` a symbolic link to `target`, atomically (the looped source reopens it at each loop)."""
    tmp = link.with_name(link.name + ".next")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


async def wait_js(page, expr: str, timeout: float):
    handle = await page.wait_for_function(f"() => ({expr})", timeout=timeout * 1000, polling=250)
    return await handle.json_value()


def baseline_js(expr: str) -> str:
    return f"(b => Boolean(b) && ({expr}))((window.__dfstream.streams[{json.dumps(STREAM)}] || {{}}).baseline)"


def test_a_camera_learns_its_normal_live_alerts_on_a_swap_and_keeps_its_bar(tmp_path):
    camera, data, log = tmp_path / f"{STREAM}.mp4", tmp_path / "data", tmp_path / "serve.log"
    point(camera, REAL)
    began = time.monotonic()
    with serving(camera, data, log) as (proc, port):
        console = log.read_text()
        assert "WARNING: --model auto is running meso4-f2f" in console, console
        assert "dfstream models pull effb4-dfdc" in console, console
        ready = get(port, "/readyz")
        auto = ready["checks"]["engines"]["auto"]
        assert auto["picked"] == "meso4-f2f" and auto["wanted"] == "effb4-dfdc" and auto["warning"], ready
        asyncio.run(learn_then_swap(port, tmp_path, camera))
    assert time.monotonic() - began < LISTEN_TIMEOUT_S + LEARN_S + NO_ALERT_S + ALERT_TIMEOUT_S + 60
    learned = json.loads((data / "baselines" / f"{STREAM}.json").read_text())
    with serving(camera, data, log) as (proc, port):
        bar = get(port, f"/api/streams/{STREAM}/baseline")["bar"]
        assert bar["origin"] == "learned" and bar["learned_at"] == learned["learned_at"], bar
        assert bar["threshold"] == learned["threshold"]
        asyncio.run(page_shows_the_bar(port, tmp_path))


async def learn_then_swap(port: int, tmp_path: Path, camera: Path) -> None:
    base = f"http://127.0.0.1:{port}"
    async with open_browser() as browser:
        page = await browser.new_page()
        await page.goto(base + "/")
        warning = page.locator("#model-warning")
        await expect(warning).to_be_visible(timeout=PAGE_TIMEOUT_S * 1000)
        await expect(warning).to_contain_text("dfstream models pull effb4-dfdc")
        await expect(warning).to_contain_text("meso4-f2f")
        tile = page.locator(f"article.tile[data-stream={json.dumps(STREAM)}]")
        control = tile.locator("form.baseline")
        await expect(control.locator("button.learn")).to_have_text("Learn normal", timeout=PAGE_TIMEOUT_S * 1000)
        await expect(control.locator(".baseline-seconds")).to_have_value("60")  # the default it asks with
        # too short: refused, and the tile says why
        await control.locator(".baseline-seconds").fill("1")
        await control.locator("button.learn").click()
        await expect(control).to_have_attribute("data-kind", "error", timeout=PAGE_TIMEOUT_S * 1000)
        await expect(control.locator(".baseline-text")).to_contain_text("too few effective samples")
        # learned from the next 15 s of the camera's real footage, with its progress on the tile
        await control.locator(".baseline-seconds").fill(str(LEARN_S))
        await control.locator("button.learn").click()
        progress = await wait_js(page, baseline_js("b.learning && b.learning.done >= 3 && b.learning.faces > 0 && "
                                                   "b.learning"), PAGE_TIMEOUT_S)
        assert progress["seconds"] == LEARN_S, progress
        await expect(control.locator(".baseline-text")).to_contain_text("Learning normal")
        await expect(control).to_have_attribute("data-kind", "learned", timeout=(LEARN_S + PAGE_TIMEOUT_S) * 1000)
        text = await control.locator(".baseline-text").text_content()
        assert "Camera bar" in text and "α 1 %" in text, text
        bar = await wait_js(page, baseline_js("b.bar"), PAGE_TIMEOUT_S)
        assert bar["origin"] == "learned" and bar["fps"] == 5 and bar["n_eff"] >= 2, bar
        await screenshot(page, tmp_path / "learned.png")
        async with WsRecorder(f"ws://127.0.0.1:{port}/ws?streams={STREAM}") as alerts:
            await asyncio.sleep(NO_ALERT_S)  # the camera's own real footage, judged at its bar
            assert alerts.of("alert") == [], alerts.of("alert")
            point(camera, FAKE)  # the feed is replaced: the next loop plays the face-swapped clip
            deadline = time.monotonic() + ALERT_TIMEOUT_S
            while not any(a["event"] == "start" for a in alerts.of("alert")):
                assert time.monotonic() < deadline, f"no alert {ALERT_TIMEOUT_S:.0f} s after the swap"
                await asyncio.sleep(0.5)
        first = next(a for a in alerts.of("alert") if a["event"] == "start")
        assert first["stream"] == STREAM and first["score_max"] >= bar["threshold"], first
        await expect(page.locator(f"#alert-{first['id']}")).to_be_visible(timeout=PAGE_TIMEOUT_S * 1000)


async def page_shows_the_bar(port: int, tmp_path: Path) -> None:
    async with open_browser() as browser:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/")
        control = page.locator(f"article.tile[data-stream={json.dumps(STREAM)}] form.baseline")
        await expect(control).to_have_attribute("data-kind", "learned", timeout=PAGE_TIMEOUT_S * 1000)
        await expect(control.locator(".baseline-text")).to_contain_text("Camera bar")
        await expect(control.locator("button.forget")).to_be_visible()
        await screenshot(page, tmp_path / "restarted.png")
