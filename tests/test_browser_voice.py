"""A webcam's microphone, in real Chromium (Debian's, headless, Playwright: tests/support/browser.py) against the real serve
app with AASIST-L (the authors' published weights) judging voices.

Chromium's fake capture devices stand in for the hardware: the fake camera, and a fake microphone playing a WAV of
the shared speech (`--use-file-for-fake-audio-capture`). "Use my webcam" asks for the camera and the microphone;
the page sends both, the server judges the voice, every overlay of the stream carries a `voice` object, and the
tile shows it under the video: a level meter and the voice's verdict; the stats show the face and voice verdicts
side by side. Where the microphone is refused, the webcam goes without sound, as before. A voice alert (a voice
engine that calls every window fake stands in for a detector that is sure) is listed in the feed with its own
label, under the stream's name and no track.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from engines.voices import build_voice_engine
from stream.config.serve import ServeConfig
from stream.config.voices import VoiceConfig

from support.browser import chromium_unavailable, open_browser, screenshot
from support.live_server import LiveServer
from support.parts import needs
from support.serve_fakes import ConstantVoice, NoFaces
from support.sound_media import speech_run
from support.ws_recorder import WsRecorder
from test_browser import PAGE_TIMEOUT_S, ms, start_webcam, tile_of, until, until_live, wait_js
from support.voice_media import AASIST_WEIGHTS, RATE, write_wav

if chromium_unavailable() is None:
    from playwright.async_api import expect

pytestmark = needs("Chromium (with Playwright)", chromium_unavailable())

VOICE_TIMEOUT_S = 120.0  # AASIST-L takes seconds per window on a loaded 2-core machine


@pytest.fixture(scope="module")
def aasist_l():
    return build_voice_engine("aasist-l", weights_dir=AASIST_WEIGHTS, allow_download=False)


def voice_config(model: str = "aasist-l", hop_s: float = 2.0) -> ServeConfig:
    return ServeConfig(port=0, voice=VoiceConfig(models=[model], hop_s=hop_s))


def source_of(server: LiveServer, name: str):
    return next((s for s in server.service.scheduler.sources() if s.name == name), None)


@pytest.mark.slow
def test_a_webcams_microphone_is_judged_and_the_tile_shows_the_voice(aasist_l, tmp_path):
    mic = write_wav(tmp_path / "mic.wav", speech_run(30.0), RATE)
    flags = ["--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={mic}"]

    async def scenario(server: LiveServer) -> None:
        async with WsRecorder(server.base.replace("http", "ws") + "/ws") as msgs, open_browser(flags) as browser:
            page = await browser.new_page(permissions=["camera", "microphone"])
            await page.goto(server.base + "/")
            await until_live(page)
            name = await start_webcam(page)
            assert await page.evaluate("window.__dfstream.webcam.audio") is True
            source = source_of(server, name)
            assert source is not None and source.audio_track is not None  # the microphone reached the server

            def judged():
                return [m["voice"] for m in msgs.of("overlay", name)
                        if m.get("voice") and m["voice"]["windows"] > 0 and m["voice"]["p_fake"] is not None]

            assert await until(lambda: judged(), VOICE_TIMEOUT_S), [m.get("voice") for m in msgs.of("overlay", name)][-3:]
            voice = judged()[-1]
            assert voice["track"] == -1 and voice["engines"].keys() == {"aasist-l"} and voice["voiced"] >= 0.25
            assert voice["level_db"] is not None and voice["level_db"] > -60  # the meter has something to show
            # every overlay since the first sound carries the voice (the first few may come before any sound)
            first = next(i for i, m in enumerate(msgs.of("overlay", name)) if m.get("voice"))
            assert all("voice" in m for m in msgs.of("overlay", name)[first:])

            # the page: the voice under the video, its meter and its verdict; face and voice side by side
            tile = tile_of(page, name)
            row = tile.locator(".voice")
            await expect(row).to_be_visible(timeout=ms(PAGE_TIMEOUT_S))
            shown = await wait_js(page, f"(s => s && s.voice && s.voice.windows > 0 && s.voice.verdict !== "
                                        f"'low-quality' ? s.voice : null)(window.__dfstream.streams[{json.dumps(name)}])",
                                  VOICE_TIMEOUT_S)
            await expect(row.locator(".voice-verdict")).to_contain_text(shown["verdict"], timeout=ms(PAGE_TIMEOUT_S))
            await wait_js(page, f"parseFloat(document.querySelector('article.tile[data-stream={json.dumps(name)}] "
                                f".voice-meter i').style.width) > 0", PAGE_TIMEOUT_S)
            await expect(tile.locator(".stats")).to_contain_text("voice", timeout=ms(PAGE_TIMEOUT_S))
            verdicts = await wait_js(page, f"(s => s && s.verdicts && s.verdicts.voice ? s.verdicts : null)"
                                           f"(window.__dfstream.streams[{json.dumps(name)}])", PAGE_TIMEOUT_S)
            assert verdicts["rule"] == "either" and verdicts["voice"] in ("real", "uncertain", "fake")
            await screenshot(page, tmp_path / "webcam-voice.png")
            await tile.locator("button.remove").click()
            assert await until(lambda: name not in server.service.names(), PAGE_TIMEOUT_S)

    with LiveServer(voice_config(), [], NoFaces(), voice_engines=[aasist_l]) as server:
        asyncio.run(scenario(server))


def test_a_refused_microphone_leaves_the_webcam_without_sound(aasist_l, tmp_path):
    async def scenario(server: LiveServer) -> None:
        async with open_browser(["--use-fake-device-for-media-stream"]) as browser:
            page = await browser.new_page(permissions=["camera"])  # the microphone is not granted
            await page.goto(server.base + "/")
            await until_live(page)
            name = await start_webcam(page)
            assert await page.evaluate("window.__dfstream.webcam.audio") is False
            assert await page.evaluate("window.__dfstream.notice") is None  # not an error: a webcam without sound
            source = source_of(server, name)
            assert source is not None and source.audio_track is None
            await wait_js(page, f"(s => s && s.video.frames > 0)(window.__dfstream.streams[{json.dumps(name)}])",
                          PAGE_TIMEOUT_S)
            await asyncio.sleep(2.0)
            assert await page.evaluate(f"window.__dfstream.streams[{json.dumps(name)}].voice") is None
            await expect(tile_of(page, name).locator(".voice")).to_be_hidden()

    with LiveServer(voice_config(), [], NoFaces(), voice_engines=[aasist_l]) as server:
        asyncio.run(scenario(server))


def test_a_voice_alert_is_listed_with_its_own_label(tmp_path):
    mic = write_wav(tmp_path / "mic.wav", speech_run(10.0), RATE)
    flags = ["--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={mic}"]

    async def scenario(server: LiveServer) -> None:
        async with open_browser(flags) as browser:
            page = await browser.new_page(permissions=["camera", "microphone"])
            await page.goto(server.base + "/")
            await until_live(page)
            name = await start_webcam(page)
            item = page.locator("li.alert[data-modality='voice']").first
            await expect(item).to_be_visible(timeout=ms(VOICE_TIMEOUT_S))
            await expect(item.locator(".modality")).to_have_text("voice")
            await expect(item.locator("strong")).to_have_text(name)  # the stream; a voice has no face track
            assert await page.locator("li.alert[data-modality='face']").count() == 0
            await tile_of(page, name).locator("button.remove").click()
            assert await until(lambda: name not in server.service.names(), PAGE_TIMEOUT_S)

    with LiveServer(voice_config("constant-voice", hop_s=0.5), [], NoFaces(),
                    voice_engines=[ConstantVoice(0.99)]) as server:
        asyncio.run(scenario(server))
