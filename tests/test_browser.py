"""The page in a real browser: Debian's Chromium, headless, driven over CDP (tests/cdp.py), against the real serve
app (MTCNN + MesoNet) in tests/live_server.LiveServer.

1. Webcam: Chromium's fake camera plays a shared FF++ video (converted to .y4m); "Use my webcam" sends it to the
   server over WebRTC, and the local preview shows boxes with scores, matched to the frames by timestamp.
2. RTSP: a loopback RTSP camera added from the page is relayed back over WebRTC and shows boxes.
3. Alerts: the shared Deepfakes video raises an alert that appears in the feed with a snapshot that loads.
4. Refusals: bound beyond loopback with a token, the page without the token is refused and asks for it.

Screenshots are saved under each test's tmp_path. `DFSTREAM_SCREENSHOT=docs/browser.png` also writes the webcam
test's screenshot there (the README's image): see the README's Browser section for the one-line command.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import aioice.ice
import av
import pytest

from engines.registry import build_engine
from stream.config.serve import ServeConfig
from stream.live.server.relay import RELAY_KEY
from stream.live.sources.live import SourceConfig

from cdp import Browser, Page, chromium_unavailable
from conftest import FFPP, MESONET_WEIGHTS
from live_server import LiveServer, collect
from rtsp_server import RtspServer, unavailable_reason

REAL_VIDEO = FFPP / "real" / "004.mp4"
FAKE_VIDEO = FFPP / "fake" / "Deepfakes_519_515.mp4"
Y4M_SIZE = (640, 360)  # the fake camera's frames: small, to keep the file and the work light
Y4M_SECONDS = 8.0  # Chromium loops the file
BOXES_TIMEOUT_S = 30.0
ALERT_TIMEOUT_S = 120.0
PAGE_TIMEOUT_S = 20.0
TOKEN = "browser-test-token"
SCREENSHOT_SETTLE_S = 12.0

pytestmark = pytest.mark.skipif(chromium_unavailable() is not None, reason=chromium_unavailable() or "")


@pytest.fixture(scope="module")
def meso():
    return build_engine("meso4-df", weights_dir=MESONET_WEIGHTS, allow_download=False)


@pytest.fixture(autouse=True)
def _ice_on_loopback(monkeypatch):
    """As in test_webrtc: on a host with no address but loopback, let aioice offer 127.0.0.1 (Chromium runs
    with --allow-loopback-in-peer-connection for the same reason)."""
    if not aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True):
        monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def to_y4m(video: Path, out: Path, size=Y4M_SIZE, seconds=Y4M_SECONDS) -> Path:
    """Decode `video` into the raw .y4m Chromium's fake camera plays."""
    with av.open(str(video)) as src, av.open(str(out), "w", format="yuv4mpegpipe") as dst:
        stream = src.streams.video[0]
        y4m = dst.add_stream("rawvideo", rate=stream.average_rate)
        y4m.width, y4m.height, y4m.pix_fmt = *size, "yuv420p"
        for frame in src.decode(stream):
            if frame.time is not None and frame.time > seconds:
                break
            for packet in y4m.encode(frame.reformat(width=size[0], height=size[1], format="yuv420p")):
                dst.mux(packet)
        for packet in y4m.encode():
            dst.mux(packet)
    return out


def stream_js(name: str, expr: str) -> str:
    """A JS expression over the page's state for one stream (`s`), false while the stream is not there."""
    return f"(s => Boolean(s) && ({expr}))(window.__dfstream.streams[{json.dumps(name)}])"


async def scored_faces(page: Page, name: str, timeout: float) -> list[dict]:
    return await page.wait_for(
        f"(s => s && s.drawn.faces.filter(f => f.score !== null).length ? s.drawn.faces : null)"
        f"(window.__dfstream.streams[{json.dumps(name)}])", timeout)


async def until(predicate, timeout: float, poll: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


async def hover_face(page: Page, name: str) -> str:
    """Move the mouse onto the first scored face box of `name`; returns the tooltip's text."""
    tile = f"article[data-stream={json.dumps(name)}]"
    for _ in range(5):  # the face may move between reading its box and the mouse arriving
        x, y, w, h = (await scored_faces(page, name, BOXES_TIMEOUT_S))[0]["box"]
        left, top = await page.evaluate(f"(r => [r.x, r.y])(document.querySelector("
                                        f"{json.dumps(tile + ' canvas.overlay')}).getBoundingClientRect())")
        await page.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": left + x + w / 2,
                                                     "y": top + y + h / 2})
        try:
            return await page.wait_for(f"(t => !t.hidden && t.textContent)(document.querySelector("
                                       f"{json.dumps(tile + ' .tooltip')}))", 2)
        except TimeoutError:
            continue
    raise AssertionError(f"no tooltip over {name}'s face box")


def save_screenshot_paths(tmp_path: Path, name: str) -> list[Path]:
    paths = [tmp_path / name]
    if os.environ.get("DFSTREAM_SCREENSHOT"):
        paths.append(Path(os.environ["DFSTREAM_SCREENSHOT"]))
    return paths


@pytest.mark.slow
def test_webcam_preview_shows_scored_face_boxes(meso, tmp_path):
    y4m = to_y4m(REAL_VIDEO, tmp_path / "camera.y4m")  # deleted at the end: ~70 MB
    camera = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--use-file-for-fake-video-capture={y4m}"]

    async def scenario(server: LiveServer) -> None:
        async with Browser(camera) as browser:
            page = await browser.new_page(height=720)
            await page.goto(server.base + "/")
            await page.wait_for("window.__dfstream.ready && window.__dfstream.ws === 'open'", PAGE_TIMEOUT_S)
            await page.click("#webcam")
            started = time.monotonic()
            name = await page.wait_for(
                "window.__dfstream.webcam && !window.__dfstream.webcam.pending && window.__dfstream.webcam.stream",
                BOXES_TIMEOUT_S)
            faces = await scored_faces(page, name, BOXES_TIMEOUT_S - (time.monotonic() - started))
            assert all(0.0 <= f["score"] <= 1.0 and "meso4-df" in f["engines"] for f in faces if f["score"] is not None)
            state = await page.evaluate(f"window.__dfstream.streams[{json.dumps(name)}]")
            assert state["mode"] == "local" and state["sync"]["clock"] == "capture", state["sync"]
            # matched by timestamp: some drawn overlays belong to the very frame on screen (within 0.5 ms), which
            # a wrong clock mapping would essentially never give
            await page.wait_for(stream_js(name, "s.sync.exact_hits > 0"), BOXES_TIMEOUT_S)
            # boxes drawn over a drawn picture (a frame with no overlay close enough shows none: poll)
            await page.wait_for(f"(i => i.overlayInk > 0 && i.previewInk > 0)"
                                f"(window.__dfstream.inspect({json.dumps(name)}))", BOXES_TIMEOUT_S)
            assert name in server.service.names()
            # let the verdict strip and stats fill in (longer for the README's picture)
            await asyncio.sleep(SCREENSHOT_SETTLE_S if os.environ.get("DFSTREAM_SCREENSHOT") else 1.0)
            tip = await hover_face(page, name)  # the picture shows the per-engine scores too
            assert "meso4-df" in tip, tip
            await page.screenshot(*save_screenshot_paths(tmp_path, "webcam.png"))

            # the tile's Remove stops the stream on the server, and the tile goes
            await page.click(f"article[data-stream={json.dumps(name)}] button.remove")
            await page.wait_for(f"!window.__dfstream.streams[{json.dumps(name)}] && !window.__dfstream.webcam",
                                PAGE_TIMEOUT_S)
            assert await until(lambda: name not in server.service.names(), PAGE_TIMEOUT_S)

    try:
        with LiveServer(ServeConfig(port=0), [meso]) as server:
            asyncio.run(scenario(server))
    finally:
        y4m.unlink(missing_ok=True)


@pytest.mark.slow
def test_rtsp_camera_added_from_the_page_is_relayed_with_boxes(meso, tmp_path):
    if reason := unavailable_reason():
        pytest.skip(reason)

    async def scenario(server: LiveServer, camera: RtspServer) -> None:
        async with Browser() as browser:
            page = await browser.new_page()
            await page.goto(server.base + "/")
            await page.wait_for("window.__dfstream.ready && window.__dfstream.ws === 'open'", PAGE_TIMEOUT_S)
            await page.type("#camera-url", camera.url)
            await page.type("#camera-name", "door")
            await page.click("#add-camera button[type=submit]")
            await page.wait_for(stream_js("door", "s.mode === 'relay' && s.state === 'streaming'"), BOXES_TIMEOUT_S)
            video = "document.querySelector('article[data-stream=\"door\"] video')"
            await page.wait_for(f"{video}.videoWidth > 0 && {video}.currentTime > 0", BOXES_TIMEOUT_S)
            t0 = await page.evaluate(f"{video}.currentTime")
            faces = await scored_faces(page, "door", BOXES_TIMEOUT_S)
            assert faces and all("meso4-df" in f["engines"] for f in faces if f["score"] is not None)
            t1 = await page.evaluate(f"{video}.currentTime")
            assert t1 > t0, "the relayed video is not advancing"
            state = await page.evaluate("window.__dfstream.streams.door")
            assert state["sync"]["clock"] == "relay", state["sync"]
            await page.wait_for(stream_js("door", "s.sync.exact_hits > 0"), BOXES_TIMEOUT_S)
            assert state["video"]["width"] > 0
            await page.wait_for("window.__dfstream.inspect('door').overlayInk > 0", BOXES_TIMEOUT_S)
            tip = await hover_face(page, "door")
            assert "meso4-df" in tip and "Track #" in tip, tip
            relay = server._runner.app[RELAY_KEY]
            assert sum(len(r.viewers) for r in relay.relays.values()) == 1
            await page.screenshot(tmp_path / "rtsp.png")

            await page.click("article[data-stream=\"door\"] button.remove")
            await page.wait_for("!window.__dfstream.streams.door", PAGE_TIMEOUT_S)
            assert await until(lambda: "door" not in server.service.names() and not relay.viewers, PAGE_TIMEOUT_S)

    with RtspServer(REAL_VIDEO) as camera, LiveServer(ServeConfig(port=0), [meso]) as server:
        asyncio.run(scenario(server, camera))


@pytest.mark.slow
def test_alert_on_the_deepfakes_video_appears_in_the_feed_of_a_page_opened_later(meso, tmp_path):
    """The page is opened only after the alert started, as a reviewer would: the feed still shows it."""
    source = SourceConfig(name="studio", url=str(FAKE_VIDEO), loop=True)

    async def scenario(server: LiveServer) -> None:
        started = await collect(server.base.replace("http", "ws") + "/ws?streams=studio",
                                lambda msgs: any(m.get("type") == "alert" for m in msgs), ALERT_TIMEOUT_S)
        first = next(m for m in started if m.get("type") == "alert")
        async with Browser() as browser:
            page = await browser.new_page()
            await page.goto(server.base + "/")
            await page.wait_for("window.__dfstream.ready", PAGE_TIMEOUT_S)
            alert = await page.wait_for(
                f"(a => a && a.snapshot === 'loaded' && a)(window.__dfstream.alerts[{json.dumps(first['id'])}])",
                PAGE_TIMEOUT_S)
            assert alert["stream"] == "studio"
            assert alert["score_max"] >= 0.7 and "meso4-df" in alert["engines"]
            shown = await page.evaluate(
                f"(() => {{ const li = document.getElementById('alert-{alert['id']}');"
                f" const img = li.querySelector('img'); const a = li.querySelector('a');"
                f" return {{w: img.naturalWidth, h: img.naturalHeight, clip: a && a.href,"
                f" text: li.textContent}}; }})()")
            assert shown["w"] == shown["h"] == 224, shown
            assert "studio" in shown["text"] and "track #" in shown["text"]
            assert shown["clip"] and f"/evidence/{alert['id']}/clip.mp4" in shown["clip"]
            # the clip is written just after the snapshot, on the evidence thread
            clip = await page.wait_for(
                f"fetch({json.dumps(shown['clip'])})"
                f".then(r => r.ok ? r.blob() : null).then(b => b && [b.size, b.type])", PAGE_TIMEOUT_S, poll=0.5)
            assert clip and clip[0] > 0 and clip[1] == "video/mp4", clip
            await page.screenshot(tmp_path / "alert.png")

    with LiveServer(ServeConfig(port=0, sources=[source]), [meso]) as server:
        asyncio.run(scenario(server))


@pytest.mark.slow
def test_page_without_the_token_is_refused_and_asks_for_it(meso, tmp_path):
    config = ServeConfig(host="127.0.0.2", port=0, token=TOKEN)

    async def scenario(base: str) -> None:
        async with Browser() as browser:
            page = await browser.new_page()
            await page.goto(base + "/")
            await page.wait_for("window.__dfstream.auth === 'needed'", PAGE_TIMEOUT_S)
            assert await page.evaluate("document.getElementById('token-dialog').open")
            assert await page.evaluate("fetch('/api/streams').then(r => r.status)") == 401
            assert await page.evaluate(
                "new Promise(r => { const w = new WebSocket(`ws://${location.host}/ws`);"
                " w.onopen = () => { w.close(); r('open'); }; w.onerror = () => r('refused'); })") == "refused"
            assert not await page.evaluate("window.__dfstream.ready")
            await page.screenshot(tmp_path / "token.png")

            await page.type("#token-input", "wrong-token")
            await page.click("#token-form button[type=submit]")
            await page.wait_for("window.__dfstream.auth === 'refused'", PAGE_TIMEOUT_S)

            await page.type("#token-input", TOKEN)
            await page.click("#token-form button[type=submit]")
            await page.wait_for("window.__dfstream.ready && window.__dfstream.ws === 'open'", PAGE_TIMEOUT_S)
            assert not await page.evaluate("document.getElementById('token-dialog').open")

            # opened with ?token= (as `serve` prints it): works at once and the token leaves the address bar
            fresh = await browser.new_page()
            await fresh.goto(f"{base}/?token={TOKEN}")
            await fresh.wait_for("window.__dfstream.ready && window.__dfstream.ws === 'open'", PAGE_TIMEOUT_S)
            assert "token" not in await fresh.evaluate("location.href")

    with LiveServer(config, [meso]) as server:
        base = f"http://127.0.0.2:{server.config.port}"
        asyncio.run(scenario(base))


def test_evidence_route_serves_only_alert_files_and_needs_the_token(meso, tmp_path):
    config = ServeConfig(host="127.0.0.2", port=0, token=TOKEN, data_dir=tmp_path)
    alert_id = "0123456789abcdef0123456789abcdef"
    folder = tmp_path / "evidence" / alert_id
    folder.mkdir(parents=True)
    (folder / "snapshot.jpg").write_bytes(b"\xff\xd8jpeg")
    (tmp_path / "secret.txt").write_text("not evidence")

    def get(base: str, path: str, token: str | None = TOKEN) -> tuple[int, bytes, str]:
        req = urllib.request.Request(base + path)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            return err.code, err.read(), ""

    with LiveServer(config, [meso]) as server:
        base = f"http://127.0.0.2:{server.config.port}"
        assert get(base, f"/evidence/{alert_id}/snapshot.jpg")[:3:2] == (200, "image/jpeg")
        assert get(base, f"/evidence/{alert_id}/snapshot.jpg", token=None)[0] == 401
        for path in (f"/evidence/{alert_id}/clip.mp4", f"/evidence/{alert_id}/../secret.txt",
                     "/evidence/..%2F..%2Fsecret.txt/snapshot.jpg", f"/evidence/{alert_id}/%2e%2e%2fsecret.txt",
                     "/evidence/0123/snapshot.jpg", f"/evidence/{alert_id.upper()}/snapshot.jpg"):
            assert get(base, path)[0] == 404, path
        # the page and its code load without the token (they hold no data); the data does not
        assert get(base, "/", token=None)[0] == 200
        assert get(base, "/static/app.js", token=None)[0] == 200
        assert get(base, "/api/streams", token=None)[0] == 401


@pytest.mark.slow
def test_failures_are_said_in_words(meso, tmp_path):
    """Camera permission denied, a camera that drops and comes back, and a server that goes away and returns:
    each shows as a sentence on the page, never as a blank tile, and the page recovers by itself."""
    if reason := unavailable_reason():
        pytest.skip(reason)
    config = ServeConfig(port=0)
    first = LiveServer(config, [meso]).__enter__()
    port = first.config.port
    servers = [first]

    async def scenario(camera: RtspServer) -> None:
        async with Browser(["--use-fake-device-for-media-stream"]) as browser:
            page = await browser.new_page()
            await browser.send("Browser.setPermission", {"permission": {"name": "camera"}, "setting": "denied",
                                                         "origin": first.base})
            await page.goto(first.base + "/")
            await page.wait_for("window.__dfstream.ready && window.__dfstream.ws === 'open'", PAGE_TIMEOUT_S)

            # 1. camera permission denied
            await page.click("#webcam")
            notice = await page.wait_for("window.__dfstream.notice", PAGE_TIMEOUT_S)
            assert notice["kind"] == "camera-error" and "permission was denied" in notice["text"], notice
            assert not await page.evaluate("window.__dfstream.webcam")
            assert not await page.evaluate("Object.keys(window.__dfstream.streams).length")

            # 2. a camera that drops: the tile says it is reconnecting, then streams again
            status, _ = first.api("POST", "/api/streams", {"url": camera.url, "name": "porch"})
            assert status == 201
            await page.wait_for(stream_js("porch", "s.state === 'streaming' && s.video.frames > 0"), BOXES_TIMEOUT_S)
            camera.stop()
            text = await page.wait_for(stream_js("porch", "s.messageKind === 'reconnecting' && s.message"),
                                       PAGE_TIMEOUT_S)
            assert "reconnecting" in text
            await page.screenshot(tmp_path / "reconnecting.png")
            camera.start()
            await page.wait_for(stream_js("porch", "s.state === 'streaming' && s.message === ''"), BOXES_TIMEOUT_S)

            # 3. the server goes away: the page says so and retries with back-off; it comes back on the same port
            first.__exit__(None, None, None)
            servers.remove(first)
            await page.wait_for("window.__dfstream.ws === 'reconnecting'", PAGE_TIMEOUT_S)
            banner = await page.evaluate("document.getElementById('conn').textContent")
            assert "Disconnected from the server" in banner and "Reconnecting in" in banner, banner
            await page.wait_for(stream_js("porch", "s.messageKind === 'offline'"), PAGE_TIMEOUT_S)
            await page.screenshot(tmp_path / "disconnected.png")
            servers.append(LiveServer(config.model_copy(update={"port": port}), [meso]).__enter__())
            await page.wait_for("window.__dfstream.ws === 'open'", 40)
            # the new server has no streams: the old tile goes, and the page says there are none
            await page.wait_for("!Object.keys(window.__dfstream.streams).length", PAGE_TIMEOUT_S)
            assert await page.evaluate("!document.getElementById('empty').hidden")

    try:
        with RtspServer(REAL_VIDEO) as camera:
            asyncio.run(scenario(camera))
    finally:
        for server in servers:
            server.__exit__(None, None, None)
