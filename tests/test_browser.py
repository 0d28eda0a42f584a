"""The page in a real browser: Debian's Chromium, headless, driven by Playwright (tests/support/browser.py), against the
real serve app (MTCNN + MesoNet) in tests/support/live_server.LiveServer.

1. Webcam: Chromium's fake camera plays a shared FF++ video (converted to .y4m); "Use my webcam" sends it to the
   server over WebRTC, and the local preview shows boxes with scores, matched to the frames by timestamp.
   The real clip as a webcam at 1280x720 and at 640x360 raises no alert in 60 s, and every face carries its
   quality (face size, sharpness, the link's received size and bitrate); with Chromium's default WebRTC settings
   (mDNS host candidates) the webcam still connects, or the page says why not. A face below every engine's
   quality floor is drawn grey with its reason.
2. RTSP: a loopback RTSP camera added from the page is relayed back over WebRTC and shows boxes.
3. Alerts: the shared Deepfakes video raises an alert that appears in the feed with a snapshot that loads.
4. Refusals: bound beyond loopback with a token, the page without the token is refused and asks for it.

Waits are Playwright's: `expect(locator)` for what the page shows, `wait_for_function` for its state
(window.__dfstream). Each page's console is printed when a test fails.

Screenshots are saved under each test's tmp_path. `DFSTREAM_SCREENSHOT=docs/browser.png` also writes the webcam
test's screenshot there (the docs' image): docs/browser.md gives the one-line command.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import pytest

from engines.quality import QualityFloor
from engines.registry import DEFAULT_MODEL, build_engine
from stream.config.serve import ServeConfig
from stream.live.faces import FaceDetector
from stream.live.server.relay import RELAY_KEY
from stream.live.sources.live import SourceConfig

from support.browser import chromium_unavailable, open_browser, screenshot
from support.shared import FFPP, MESONET_WEIGHTS
from support.parts import needs, require
from support.live_server import LiveServer, collect
from support.rtsp_server import RtspServer, unavailable_reason
from support.serve_fakes import NoFaces
from support.ws_recorder import WsRecorder

if chromium_unavailable() is None:
    from playwright.async_api import TimeoutError as PlaywrightTimeoutError
    from playwright.async_api import expect

REAL_VIDEO = FFPP / "real" / "004.mp4"
FAKE_VIDEO = FFPP / "fake" / "Deepfakes_519_515.mp4"
Y4M_SIZE = (640, 360)  # the fake camera's frames: small, to keep the file and the work light
Y4M_SECONDS = 8.0  # Chromium loops the file
BOXES_TIMEOUT_S = 30.0
ALERT_TIMEOUT_S = 120.0
PAGE_TIMEOUT_S = 20.0
TOKEN = "browser-test-token"
SCREENSHOT_SETTLE_S = 12.0
NO_ALERT_S = 60.0  # how long the real clip as a webcam must go without an alert
VERDICTS = {"real", "uncertain", "fake", "low-quality"}  # what a face's verdict may be (README, Messages)
MIN_BITRATE_BPS = 2_500_000  # the page's sender cap at 720p and below (web/static/rtc.js)

pytestmark = needs("Chromium (with Playwright)", chromium_unavailable())


@pytest.fixture(scope="module")
def meso():
    return build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)


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


def fake_camera(y4m: Path) -> list[str]:
    """Chromium flags: a fake camera playing `y4m`, granted without asking."""
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}"]


def ms(seconds: float) -> float:
    return seconds * 1000


def stream_js(name: str, expr: str) -> str:
    """A JS expression over the page's state for one stream (`s`), false while the stream is not there."""
    return f"(s => Boolean(s) && ({expr}))(window.__dfstream.streams[{json.dumps(name)}])"


async def wait_js(page, expr: str, timeout: float, poll: float = 0.25):
    """Wait until the JS expression `expr` is truthy; returns its JSON value."""
    try:
        handle = await page.wait_for_function(f"() => ({expr})", timeout=ms(timeout), polling=ms(poll))
    except PlaywrightTimeoutError:
        raise AssertionError(f"waited {timeout:.0f} s for {expr!r}") from None
    return await handle.json_value()


async def wait_promise(page, expr: str, timeout: float, poll: float = 0.5):
    """Wait until the promise `expr` resolves to something truthy (wait_for_function does not await promises:
    each poll starts `expr` again once the previous run gave nothing); returns its JSON value."""
    slot = f"window[{json.dumps('__wait_' + os.urandom(4).hex())}]"
    return await wait_js(page, f"""(slot => {{
        if (slot.value) return slot.value;
        if (!slot.busy) {{
            slot.busy = true;
            Promise.resolve().then(() => ({expr})).then((v) => {{ slot.value = v; }}, () => {{}})
                .finally(() => {{ slot.busy = false; }});
        }}
        return null;
    }})({slot} ||= {{ busy: false, value: null }})""", timeout, poll)


def tile_of(page, name: str):
    return page.locator(f"article.tile[data-stream={json.dumps(name)}]")


async def until_live(page, timeout: float = PAGE_TIMEOUT_S) -> None:
    """The page has booted and its websocket is open, as the banner says."""
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=ms(timeout))
    await expect(page.locator("#conn")).to_have_text("Live")
    await wait_js(page, "window.__dfstream.ready && window.__dfstream.ws === 'open'", timeout)


async def scored_faces(page, name: str, timeout: float) -> list[dict]:
    return await wait_js(page, f"(s => s && s.drawn.faces.filter(f => f.score !== null).length ? s.drawn.faces"
                               f" : null)(window.__dfstream.streams[{json.dumps(name)}])", timeout)


async def until(predicate, timeout: float, poll: float = 0.2) -> bool:
    """For the server's side (not the page's): poll `predicate` until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


async def hover_face(page, name: str) -> str:
    """Move the mouse onto the first scored face box of `name`; returns the tooltip's text."""
    tile = tile_of(page, name)
    tooltip = tile.locator(".tooltip")
    for _ in range(5):  # the face may move between reading its box and the mouse arriving
        x, y, w, h = (await scored_faces(page, name, BOXES_TIMEOUT_S))[0]["box"]
        canvas = await tile.locator("canvas.overlay").bounding_box()
        await page.mouse.move(canvas["x"] + x + w / 2, canvas["y"] + y + h / 2)
        try:
            await expect(tooltip).to_be_visible(timeout=2000)
            await expect(tooltip).to_contain_text("Track #", timeout=1000)
        except AssertionError:
            continue
        return await tooltip.text_content()
    raise AssertionError(f"no tooltip over {name}'s face box")


async def start_webcam(page, timeout: float = BOXES_TIMEOUT_S) -> str:
    """Press "Use my webcam" and wait until the server has answered; returns the stream's name."""
    await page.locator("#webcam").click()
    await expect(page.locator("#webcam")).to_have_text("Webcam on", timeout=ms(timeout))
    return await wait_js(page, "window.__dfstream.webcam && !window.__dfstream.webcam.pending"
                               " && window.__dfstream.webcam.stream", PAGE_TIMEOUT_S)


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
        async with open_browser(camera) as browser:
            page = await browser.new_page(height=720)
            await page.goto(server.base + "/")
            await until_live(page)
            await expect(page.locator("#empty")).to_be_visible()
            await page.locator("#webcam").click()
            started = time.monotonic()
            await expect(page.locator("#webcam")).to_have_text("Webcam on", timeout=ms(BOXES_TIMEOUT_S))
            await expect(page.locator("#webcam")).to_be_disabled()
            name = await wait_js(page, "window.__dfstream.webcam && !window.__dfstream.webcam.pending"
                                       " && window.__dfstream.webcam.stream", PAGE_TIMEOUT_S)
            tile = tile_of(page, name)
            await expect(tile).to_have_attribute("data-mode", "local")
            await expect(tile.locator("canvas.preview")).to_be_visible()
            await expect(page.locator("#empty")).to_be_hidden()
            faces = await scored_faces(page, name, BOXES_TIMEOUT_S - (time.monotonic() - started))
            assert all(0.0 <= f["score"] <= 1.0 and DEFAULT_MODEL in f["engines"] for f in faces if f["score"] is not None)
            state = await page.evaluate(f"window.__dfstream.streams[{json.dumps(name)}]")
            assert state["mode"] == "local" and state["sync"]["clock"] == "capture", state["sync"]
            # matched by timestamp: some drawn overlays belong to the very frame on screen (within 0.5 ms), which
            # a wrong clock mapping would essentially never give
            await wait_js(page, stream_js(name, "s.sync.exact_hits > 0"), BOXES_TIMEOUT_S)
            # boxes drawn over a drawn picture (a frame with no overlay close enough shows none: wait for one)
            await wait_js(page, f"(i => i.overlayInk > 0 && i.previewInk > 0)"
                                f"(window.__dfstream.inspect({json.dumps(name)}))", BOXES_TIMEOUT_S)
            assert name in server.service.names()
            # let the verdict strip and stats fill in (longer for the README's picture)
            await page.wait_for_timeout(ms(SCREENSHOT_SETTLE_S if os.environ.get("DFSTREAM_SCREENSHOT") else 1.0))
            await expect(tile.locator(".stats")).to_contain_text("fps")
            tip = await hover_face(page, name)  # the picture shows the per-engine scores too
            assert DEFAULT_MODEL in tip, tip
            await screenshot(page, *save_screenshot_paths(tmp_path, "webcam.png"))

            # the tile's Remove stops the stream on the server, and the tile goes
            await tile.locator("button.remove").click()
            await expect(tile).to_have_count(0, timeout=ms(PAGE_TIMEOUT_S))
            await expect(page.locator("#webcam")).to_have_text("Use my webcam")
            await wait_js(page, f"!window.__dfstream.streams[{json.dumps(name)}] && !window.__dfstream.webcam",
                          PAGE_TIMEOUT_S)
            assert await until(lambda: name not in server.service.names(), PAGE_TIMEOUT_S)

    try:
        with LiveServer(ServeConfig(port=0), [meso]) as server:
            asyncio.run(scenario(server))
    finally:
        y4m.unlink(missing_ok=True)


def quality_summary(faces: list[dict]) -> dict:
    """The spread of what the faces carried: face_px, sharpness, p(fake) (smoothed), received size, bitrate."""
    def spread(values):
        values = sorted(v for v in values if isinstance(v, (int, float)))
        if not values:
            return None
        return {"min": round(values[0], 3), "median": round(values[len(values) // 2], 3),
                "max": round(values[-1], 3), "n": len(values)}

    q = [f["quality"] for f in faces]
    return {"face_px": spread(x.get("face_px") for x in q), "sharpness": spread(x.get("sharpness") for x in q),
            "score": spread(f["score"] for f in faces), "raw": spread(f["raw"] for f in faces),
            "bitrate_kbps": spread(x.get("bitrate_kbps") for x in q),
            "received": sorted({tuple(x["received"]) for x in q if x.get("received")}),
            "verdicts": sorted({f["verdict"] for f in faces})}


# The real clip's face is ~122-138 px at 1280x720 and ~59-69 px at 640x360. Without a quality floor MesoNet's
# Deepfakes file judged the small, soft 640x360 face fake within seconds (p(fake) up to ~0.9) and an alert started:
# the bug the measured floors and default model fix (README, Robustness), which this parametrisation guards.
FLOOR_NEEDED = {(640, 360): "the default model's quality floor (engines/architectures/mesonet.py) must keep this "
                            "size's ~59-69 px faces from raising an alert"}
WEBCAM_SIZES = [pytest.param((1280, 720), id="1280x720"),
                pytest.param((640, 360), id="640x360")]


@pytest.mark.slow
@pytest.mark.parametrize("size", WEBCAM_SIZES)
def test_real_clip_as_webcam_raises_no_alert_and_every_face_carries_its_quality(meso, tmp_path, size):
    """A shared FF++ real clip as the webcam: no alert in 60 s (said by the server's own messages), every face
    with its quality (face_px, sharpness, and the link's received size and bitrate) and a documented verdict; the
    status carries the link too, and the page shows it. The page asked for 720p, capped the sender's bitrate at
    2.5 Mbps or more and keeps the resolution under congestion."""
    width, height = size
    y4m = to_y4m(REAL_VIDEO, tmp_path / "camera.y4m", size=size)  # deleted at the end: up to ~280 MB

    async def scenario(server: LiveServer) -> None:
        async with WsRecorder(server.base.replace("http", "ws") + "/ws") as msgs, open_browser(fake_camera(y4m)) as browser:
            page = await browser.new_page(height=720)
            await page.goto(server.base + "/")
            await until_live(page)
            name = await start_webcam(page)
            tile = tile_of(page, name)
            await scored_faces(page, name, BOXES_TIMEOUT_S)
            started = time.monotonic()
            capture = await page.evaluate(f"window.__dfstream.streams[{json.dumps(name)}].capture")
            assert capture["width"] == width and capture["height"] == height, capture
            assert capture["maxBitrate"] >= MIN_BITRATE_BPS, capture
            assert capture["degradationPreference"] == "maintain-resolution", capture
            await expect(tile.locator(".stats")).to_contain_text(f"received {width}×{height} at",
                                                                 timeout=ms(PAGE_TIMEOUT_S))
            await expect(tile.locator(".stats")).to_contain_text("low-quality face-frame")
            await asyncio.sleep(max(0.0, NO_ALERT_S - (time.monotonic() - started)))  # all of it: the numbers
            await expect(tile.locator(".stats")).to_contain_text(re.compile(r"at \d[\d.]* (kbps|Mbps)"))
            await screenshot(page, tmp_path / "webcam-quality.png")

        overlays = msgs.of("overlay", name)
        faces = [f for m in overlays for f in m["faces"]]
        summary = quality_summary(faces)
        print(f"webcam {width}x{height}: {len(overlays)} overlays, {len(faces)} faces: {json.dumps(summary)}")
        (tmp_path / "quality.json").write_text(json.dumps(summary))
        alerts = msgs.of("alert")
        assert not alerts, (f"{FLOOR_NEEDED.get(size, 'no floor is meant to be needed here')}: an alert on the real"
                            f" clip at {width}x{height} (face_px {summary['face_px']}, p(fake) {summary['score']},"
                            f" sharpness {summary['sharpness']}): {alerts[0]}")
        assert faces, "no face was scored"
        for face in faces:
            assert face["verdict"] in VERDICTS, face
            assert {"face_px", "sharpness", "received", "bitrate_kbps"} <= face["quality"].keys(), face
            assert face["quality"]["face_px"] > 0 and face["quality"]["sharpness"] >= 0, face
            assert (face["reason"] is not None) == (face["verdict"] == "low-quality"), face
        assert summary["received"] == [(width, height)], summary  # the resolution held all along
        assert summary["bitrate_kbps"] and summary["bitrate_kbps"]["max"] > 0, summary
        links = [m["link"] for m in msgs.of("status", name) if "link" in m]
        assert links and all({"received", "bitrate_kbps"} <= link.keys() for link in links), links[-3:]
        assert links[-1]["received"] == [width, height] and links[-1]["bitrate_kbps"] > 0, links[-1]
        assert all("gated_faces" in m for m in msgs.of("status", name) if "analysed_fps" in m)

    try:
        with LiveServer(ServeConfig(port=0), [meso]) as server:
            asyncio.run(scenario(server))
    finally:
        y4m.unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.parametrize("mdns", ["resolved", "blocked"])
def test_webcam_with_chromium_default_webrtc_settings(meso, tmp_path, monkeypatch, mdns):
    """A user's Chromium: mDNS host candidates (WebRtcHideLocalIpsWithMdns on) and no loopback candidates. The
    offer's host candidates are `.local` names, even with the camera granted. aiortc (aioice) resolves them by
    multicast DNS; and where multicast DNS is blocked (`blocked`: no name resolves), ICE still learns the browser's
    address from the browser's own checks (a peer-reflexive candidate). Either way the webcam is scored."""
    asked: list[str] = []  # the .local names the server could not resolve
    if mdns == "blocked":
        import aioice.mdns

        async def unresolved(self, hostname, timeout=1.0):
            asked.append(hostname)
            return None

        monkeypatch.setattr(aioice.mdns.MDnsProtocol, "resolve", unresolved)
    y4m = to_y4m(REAL_VIDEO, tmp_path / "camera.y4m")

    async def scenario(server: LiveServer) -> None:
        async with open_browser(fake_camera(y4m), webrtc_defaults=True) as browser:
            page = await browser.new_page(height=720)
            offers: list[str] = []
            page.on("request", lambda r: offers.append(r.post_data_json["sdp"])
                    if r.method == "POST" and r.url.endswith("/offer") else None)
            await page.goto(server.base + "/")
            await until_live(page)
            name = await start_webcam(page)
            faces = await scored_faces(page, name, BOXES_TIMEOUT_S)
            assert faces and all(f["verdict"] in VERDICTS for f in faces), faces
            candidates = [line for line in offers[0].splitlines() if line.startswith("a=candidate:")]
            print("offer candidates with Chromium's defaults:", *candidates, sep="\n  ")
            assert candidates and all(".local " in c for c in candidates if " typ host" in c), candidates
            assert bool(asked) == (mdns == "blocked"), asked
            await expect(tile_of(page, name).locator(".message")).to_be_hidden()
            assert name in server.service.names()

    try:
        with LiveServer(ServeConfig(port=0), [meso]) as server:
            asyncio.run(scenario(server))
    finally:
        y4m.unlink(missing_ok=True)


@pytest.mark.slow
def test_low_quality_faces_are_drawn_grey_with_their_reason(tmp_path):
    """With a floor no face reaches, every face is low-quality: drawn grey and dashed, labelled with the server's
    reason (and the tooltip says it was not judged), and the stats line counts the gated face-frames."""
    floor = QualityFloor(min_face_px=4096, source="test: a floor no face reaches")
    engine = build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)
    engine.quality = floor  # what build_engine sets from the registry entry
    source = SourceConfig(name="lobby", url=str(REAL_VIDEO), loop=True)

    async def scenario(server: LiveServer) -> None:
        async with open_browser() as browser:
            page = await browser.new_page()
            await page.goto(server.base + "/")
            await until_live(page)
            tile = tile_of(page, "lobby")
            faces = await wait_js(page, stream_js("lobby", "s.drawn.faces.length > 0 && s.drawn.faces"),
                                  BOXES_TIMEOUT_S)
            assert all(f["verdict"] == "low-quality" for f in faces), faces
            face = faces[0]
            assert face["reason"].startswith("face ") and f"< 4096 px for {DEFAULT_MODEL}" in face["reason"], face
            assert face["label"].startswith(f"#{face['track']} low quality: face "), face
            assert face["colour"] == "#6b7385", face  # grey, not a verdict's colour
            assert face["quality"]["face_px"] > 0 and "sharpness" in face["quality"], face
            await wait_js(page, "window.__dfstream.inspect('lobby').overlayInk > 0", BOXES_TIMEOUT_S)
            await expect(tile.locator(".stats")).to_contain_text(re.compile(r"[1-9]\d* low-quality face-frames?"),
                                                                 timeout=ms(PAGE_TIMEOUT_S))
            assert "received" not in await tile.locator(".stats").text_content()  # a file: no link to report
            canvas = await tile.locator("canvas.overlay").bounding_box()
            for _ in range(5):
                faces = await wait_js(page, stream_js("lobby", "s.drawn.faces.length > 0 && s.drawn.faces"),
                                      BOXES_TIMEOUT_S)
                x, y, w, h = faces[0]["box"]
                await page.mouse.move(canvas["x"] + x + w / 2, canvas["y"] + y + h / 2)
                try:
                    await expect(tile.locator(".tooltip .reason")).to_contain_text("Not judged: face ", timeout=2000)
                    break
                except AssertionError:
                    continue
            else:
                raise AssertionError("no tooltip over the low-quality face")
            await expect(tile.locator(".tooltip")).to_contain_text("face size")
            await screenshot(page, tmp_path / "low-quality.png")

    # a detector that searches every face size, so the faces are found and then gated (serve's own detector stops
    # searching well below the engines' floor)
    with LiveServer(ServeConfig(port=0, sources=[source]), [engine], FaceDetector()) as server:
        asyncio.run(scenario(server))


@pytest.mark.slow
def test_rtsp_camera_added_from_the_page_is_relayed_with_boxes(meso, tmp_path):
    require("GStreamer's RTSP server", unavailable_reason())

    async def scenario(server: LiveServer, camera: RtspServer) -> None:
        async with open_browser() as browser:
            page = await browser.new_page()
            await page.goto(server.base + "/")
            await until_live(page)
            await page.locator("#camera-url").fill(camera.url)
            await page.locator("#camera-name").fill("door")
            await page.locator("#add-camera button[type=submit]").click()
            tile = tile_of(page, "door")
            await expect(tile).to_have_attribute("data-mode", "relay", timeout=ms(PAGE_TIMEOUT_S))
            await expect(tile).to_have_attribute("data-state", "streaming", timeout=ms(BOXES_TIMEOUT_S))
            await expect(tile.locator(".badge.state")).to_have_text("streaming")
            await expect(page.locator("#camera-url")).to_have_value("")
            await wait_js(page, stream_js("door", "s.mode === 'relay' && s.state === 'streaming'"), BOXES_TIMEOUT_S)
            video = "document.querySelector('article[data-stream=\"door\"] video')"
            await wait_js(page, f"{video}.videoWidth > 0 && {video}.currentTime > 0", BOXES_TIMEOUT_S)
            await expect(tile.locator(".message")).to_be_hidden(timeout=ms(PAGE_TIMEOUT_S))
            t0 = await page.evaluate(f"{video}.currentTime")
            faces = await scored_faces(page, "door", BOXES_TIMEOUT_S)
            assert faces and all(DEFAULT_MODEL in f["engines"] for f in faces if f["score"] is not None)
            t1 = await page.evaluate(f"{video}.currentTime")
            assert t1 > t0, "the relayed video is not advancing"
            state = await page.evaluate("window.__dfstream.streams.door")
            assert state["sync"]["clock"] == "relay", state["sync"]
            await wait_js(page, stream_js("door", "s.sync.exact_hits > 0"), BOXES_TIMEOUT_S)
            assert state["video"]["width"] > 0
            await wait_js(page, "window.__dfstream.inspect('door').overlayInk > 0", BOXES_TIMEOUT_S)
            tip = await hover_face(page, "door")
            assert DEFAULT_MODEL in tip and "Track #" in tip, tip
            relay = server.app[RELAY_KEY]
            assert sum(len(r.viewers) for r in relay.relays.values()) == 1
            await screenshot(page, tmp_path / "rtsp.png")

            await tile.locator("button.remove").click()
            await expect(tile).to_have_count(0, timeout=ms(PAGE_TIMEOUT_S))
            await wait_js(page, "!window.__dfstream.streams.door", PAGE_TIMEOUT_S)
            await expect(page.locator("#empty")).to_be_visible()
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
        async with open_browser() as browser:
            page = await browser.new_page()
            await page.goto(server.base + "/")
            await wait_js(page, "window.__dfstream.ready", PAGE_TIMEOUT_S)
            li = page.locator(f"#alert-{first['id']}")
            await expect(li).to_have_attribute("data-snapshot", "loaded", timeout=ms(PAGE_TIMEOUT_S))
            await expect(page.locator("#no-alerts")).to_be_hidden()
            alert = await page.evaluate(f"window.__dfstream.alerts[{json.dumps(first['id'])}]")
            assert alert["snapshot"] == "loaded", alert
            assert alert["stream"] == "studio"
            assert alert["score_max"] >= 0.7 and DEFAULT_MODEL in alert["engines"]
            await expect(li.locator("strong")).to_have_text(re.compile(r"^studio · track #\d+$"))
            await expect(li).to_contain_text(DEFAULT_MODEL)
            await expect(li.locator("img")).to_have_js_property("naturalWidth", 224)
            await expect(li.locator("img")).to_have_js_property("naturalHeight", 224)
            link = li.locator("a")
            await expect(link).to_have_text("evidence clip")
            await expect(link).to_have_attribute("href", re.compile(re.escape(f"/evidence/{alert['id']}/clip.mp4")))
            href = await link.evaluate("a => a.href")
            # the clip is written just after the snapshot, on the evidence thread
            clip = await wait_promise(page, f"fetch({json.dumps(href)})"
                                            f".then(r => r.ok ? r.blob() : null).then(b => b && [b.size, b.type])",
                                      PAGE_TIMEOUT_S)
            assert clip and clip[0] > 0 and clip[1] == "video/mp4", clip
            await screenshot(page, tmp_path / "alert.png")

    with LiveServer(ServeConfig(port=0, sources=[source]), [meso]) as server:
        asyncio.run(scenario(server))


@pytest.mark.slow
def test_page_without_the_token_is_refused_and_asks_for_it(meso, tmp_path):
    config = ServeConfig(host="127.0.0.2", port=0, token=TOKEN)

    async def scenario(base: str) -> None:
        async with open_browser() as browser:
            page = await browser.new_page()
            await page.goto(base + "/")
            dialog = page.locator("#token-dialog")
            await expect(dialog).to_be_visible(timeout=ms(PAGE_TIMEOUT_S))
            await expect(dialog).to_have_js_property("open", True)
            await expect(page.locator("body")).to_have_attribute("data-auth", "needed")
            await expect(page.locator("#conn")).to_have_text("Access token needed")
            await expect(page.locator("#token-input")).to_be_focused()
            assert await page.evaluate("window.__dfstream.auth") == "needed"
            assert await page.evaluate("fetch('/api/streams').then(r => r.status)") == 401
            assert await page.evaluate(
                "new Promise(r => { const w = new WebSocket(`ws://${location.host}/ws`);"
                " w.onopen = () => { w.close(); r('open'); }; w.onerror = () => r('refused'); })") == "refused"
            assert not await page.evaluate("window.__dfstream.ready")
            await screenshot(page, tmp_path / "token.png")

            await page.locator("#token-input").fill("wrong-token")
            await page.locator("#token-form button[type=submit]").click()
            await expect(page.locator("body")).to_have_attribute("data-auth", "refused", timeout=ms(PAGE_TIMEOUT_S))
            await expect(page.locator("#token-error")).to_contain_text("That token was refused")
            await expect(dialog).to_be_visible()
            assert await page.evaluate("window.__dfstream.auth") == "refused"

            await page.locator("#token-input").fill(TOKEN)
            await page.locator("#token-form button[type=submit]").click()
            await until_live(page)
            await expect(dialog).to_be_hidden()
            await expect(dialog).to_have_js_property("open", False)
            await expect(page.locator("body")).to_have_attribute("data-auth", "ok")

            # opened with ?token= (as `serve` prints it): works at once and the token leaves the address bar
            fresh = await browser.new_page()
            await fresh.goto(f"{base}/?token={TOKEN}")
            await until_live(fresh)
            await expect(fresh.locator("#token-dialog")).to_be_hidden()
            assert "token" not in fresh.url and "token" not in await fresh.evaluate("location.href")

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
    require("GStreamer's RTSP server", unavailable_reason())
    config = ServeConfig(port=0)
    # what is under test is the page's words, not faces: no MTCNN (NoFaces), so Chromium, the RTSP camera and the
    # server's restarts have the cores
    first = LiveServer(config, [meso], detector=NoFaces()).__enter__()
    port = first.config.port
    servers = [first]

    async def scenario(camera: RtspServer) -> None:
        async with open_browser(["--use-fake-device-for-media-stream"]) as browser:
            page = await browser.new_page()  # the camera is not granted, so Playwright denies it
            await page.goto(first.base + "/")
            await until_live(page)

            # 1. camera permission denied
            await page.locator("#webcam").click()
            banner = page.locator("#notice")
            await expect(banner).to_be_visible(timeout=ms(PAGE_TIMEOUT_S))
            await expect(banner).to_have_attribute("data-kind", "camera-error")
            await expect(banner).to_contain_text("permission was denied")
            notice = await page.evaluate("window.__dfstream.notice")
            assert notice["kind"] == "camera-error" and "permission was denied" in notice["text"], notice
            await expect(page.locator("#webcam")).to_have_text("Use my webcam")
            await expect(page.locator("#webcam")).to_be_enabled()
            assert not await page.evaluate("window.__dfstream.webcam")
            assert not await page.evaluate("Object.keys(window.__dfstream.streams).length")
            await expect(page.locator("article.tile")).to_have_count(0)

            # 2. a camera that drops: the tile says it is reconnecting, then streams again
            status, _ = first.api("POST", "/api/streams", {"url": camera.url, "name": "porch"})
            assert status == 201
            tile = tile_of(page, "porch")
            message = tile.locator(".message")
            await wait_js(page, stream_js("porch", "s.state === 'streaming' && s.video.frames > 0"), BOXES_TIMEOUT_S)
            camera.stop()
            await expect(message).to_have_attribute("data-kind", "reconnecting", timeout=ms(PAGE_TIMEOUT_S))
            await expect(message).to_be_visible()
            await expect(message).to_contain_text("reconnecting")
            text = await wait_js(page, stream_js("porch", "s.messageKind === 'reconnecting' && s.message"),
                                 PAGE_TIMEOUT_S)
            assert "reconnecting" in text
            await screenshot(page, tmp_path / "reconnecting.png")
            camera.start()
            await expect(message).to_be_hidden(timeout=ms(BOXES_TIMEOUT_S))
            await wait_js(page, stream_js("porch", "s.state === 'streaming' && s.message === ''"), BOXES_TIMEOUT_S)

            # 3. the server goes away: the page says so and retries with back-off; it comes back on the same port
            first.__exit__(None, None, None)
            servers.remove(first)
            conn = page.locator("#conn")
            await expect(conn).to_have_attribute("data-state", "reconnecting", timeout=ms(PAGE_TIMEOUT_S))
            await expect(conn).to_contain_text(re.compile(r"Disconnected from the server\. Reconnecting in \d+ s"
                                                          r" \(attempt \d+\)"))
            assert await page.evaluate("window.__dfstream.ws") == "reconnecting"
            await expect(message).to_have_attribute("data-kind", "offline", timeout=ms(PAGE_TIMEOUT_S))
            await expect(message).to_contain_text("No connection to the server")
            await expect(tile).to_have_class(re.compile(r"\boffline\b"))
            await wait_js(page, stream_js("porch", "s.messageKind === 'offline'"), PAGE_TIMEOUT_S)
            await screenshot(page, tmp_path / "disconnected.png")
            servers.append(LiveServer(config.model_copy(update={"port": port}), [meso],
                                      detector=NoFaces()).__enter__())
            await until_live(page, 40)
            # the new server has no streams: the old tile goes, and the page says there are none
            await expect(tile).to_have_count(0, timeout=ms(PAGE_TIMEOUT_S))
            await wait_js(page, "!Object.keys(window.__dfstream.streams).length", PAGE_TIMEOUT_S)
            await expect(page.locator("#empty")).to_be_visible()

    try:
        with RtspServer(REAL_VIDEO) as camera:
            asyncio.run(scenario(camera))
    finally:
        for server in servers:
            server.__exit__(None, None, None)
