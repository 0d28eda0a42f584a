"""The evidence player in real Chromium: an alert card opens the full-frame recording with the overlay track
drawn on it, at the first frame judged fake, with the fused-score timeline; and a webcam's alert (frames encoded
on the server, no packets of its own) has a recording that plays."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import av
import pytest

from stream.config.serve import ServeConfig
from stream.live.sources.live import SourceConfig
from stream.messages import WIRE

from support.browser import chromium_unavailable, open_browser, screenshot
from support.live_server import LiveServer
from support.parts import needs
from test_browser import meso  # noqa: F401  (the fixture)
from test_browser import (ALERT_TIMEOUT_S, FAKE_VIDEO, PAGE_TIMEOUT_S, fake_camera, ms, start_webcam, to_y4m,
                          until_live, wait_js)
from test_evidence_recording import END_TIMEOUT_S, is_alert, wait_for

if chromium_unavailable() is None:
    from playwright.async_api import expect

pytestmark = needs("Chromium (with Playwright)", chromium_unavailable())
SCREENSHOT_ENV = "DFSTREAM_EVIDENCE_SCREENSHOT"  # also save the player's picture here (docs/evidence.md's)


async def open_player_and_check(page, alert_id: str, tmp_path: Path, shot: str) -> dict:
    li = page.locator(f"#alert-{alert_id}")
    button = li.locator("button.play-recording")
    await expect(button).to_be_visible(timeout=ms(END_TIMEOUT_S))
    await button.click()
    state = await wait_js(page, "['ready', 'error'].includes(window.__dfstream.player.status) && "
                                "window.__dfstream.player", PAGE_TIMEOUT_S)
    assert state["status"] == "ready", state
    assert state["alert"] == alert_id and state["frames"] > 0
    video = "document.querySelector('#evidence-dialog video')"
    dims = await page.evaluate(f"[{video}.videoWidth, {video}.videoHeight, {video}.duration]")
    # the boxes are drawn over the recording; the timeline has been drawn
    await wait_js(page, "window.__dfstream.player.overlayInk > 0", PAGE_TIMEOUT_S)
    await page.evaluate(f"{video}.play()")
    t0 = await page.evaluate(f"{video}.currentTime")
    await wait_js(page, f"{video}.currentTime > {t0} + 0.3 && {video}.readyState >= 2", PAGE_TIMEOUT_S)
    ink = await page.evaluate("""(() => { const c = document.querySelector('#evidence-dialog .player-timeline');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 150 && d[i + 1] < 120) n++; return n; })()""")
    assert ink > 0, "no fused-score line (or first-fake marker) drawn on the timeline"
    await page.evaluate(f"{video}.pause()")
    await page.evaluate(f"{video}.currentTime = window.__dfstream.player.seekedTo")
    await page.wait_for_timeout(500)
    paths = [tmp_path / shot] + ([Path(os.environ[SCREENSHOT_ENV])] if os.environ.get(SCREENSHOT_ENV) else [])
    await screenshot(page, *paths)
    return {**state, "width": dims[0], "height": dims[1], "duration": dims[2]}


@pytest.mark.slow
def test_alert_card_opens_the_recording_at_the_first_fake_frame(meso, tmp_path):  # noqa: F811
    source = SourceConfig(name="studio", url=str(FAKE_VIDEO))
    msgs: list[dict] = []

    async def scenario(server: LiveServer) -> None:
        async with open_browser() as browser:
            page = await browser.new_page(width=1400, height=1000)
            await page.goto(server.base + "/")
            await until_live(page)
            start = await asyncio.to_thread(wait_for, msgs, is_alert("start"), ALERT_TIMEOUT_S)
            assert start is not None, "no alert"
            await expect(page.locator(f"#alert-{start['id']} .recording-note")).to_have_text("recording…")
            await asyncio.sleep(3.0)
            await asyncio.to_thread(server.service.remove, "studio")
            state = await open_player_and_check(page, start["id"], tmp_path, "player.png")
            track = json.loads(Path(start["evidence"]["overlay"]).read_text())
            assert abs(state["seekedTo"] - track["first_fake"]) < 0.1, (state["seekedTo"], track["first_fake"])
            assert (state["width"], state["height"]) == (640, 480)

    with LiveServer(ServeConfig(port=0, sources=[source]), [meso]) as server:
        server.service.bus.subscribe(WIRE, msgs.append, wire=True)
        asyncio.run(scenario(server))


@pytest.mark.slow
def test_webcam_alert_has_a_playable_recording(meso, tmp_path):  # noqa: F811
    y4m = to_y4m(FAKE_VIDEO, tmp_path / "camera.y4m")
    msgs: list[dict] = []

    async def scenario(server: LiveServer) -> None:
        async with open_browser(fake_camera(y4m)) as browser:
            page = await browser.new_page()
            await page.goto(server.base + "/")
            await until_live(page)
            name = await start_webcam(page)
            start = await asyncio.to_thread(wait_for, msgs, is_alert("start"), ALERT_TIMEOUT_S)
            assert start is not None and start["stream"] == name, "no alert from the webcam"
            await asyncio.sleep(3.0)
            await asyncio.to_thread(server.service.remove, name)
            end = await asyncio.to_thread(wait_for, msgs, lambda m: is_alert("end")(m) and m["id"] == start["id"],
                                          END_TIMEOUT_S)
            assert end is not None and end["evidence"]["recording_state"] == "complete"
            assert end["custody"]["remuxed"] is False  # encoded from the received frames
            with av.open(end["evidence"]["recording"]) as rec:
                frames = [f for f in rec.decode(video=0)]
            assert len(frames) > 10 and frames[0].width > 0
            state = await open_player_and_check(page, start["id"], tmp_path, "webcam-player.png")
            assert state["width"] == frames[0].width and state["duration"] > 1.0

    try:
        with LiveServer(ServeConfig(port=0), [meso]) as server:
            server.service.bus.subscribe(WIRE, msgs.append, wire=True)
            asyncio.run(scenario(server))
    finally:
        y4m.unlink(missing_ok=True)
