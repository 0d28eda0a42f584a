"""The "Explain" button in real Chromium: the shared Deepfakes video raises an alert in a real `serve` (MesoNet,
MTCNN), and clicking "Explain" on its card shows the explanation text with numbered citations, the references
and the Grad-CAM heatmap, built by the server on its explain worker thread."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from engines.registry import DEFAULT_MODEL, build_engine
from stream.config.serve import ServeConfig
from stream.jobs.explain import kb
from stream.jobs.explain.alerts import AlertExplainer
from stream.jobs.explain.retrieve import Retriever
from stream.live.sources.live import SourceConfig

from support.browser import chromium_unavailable, open_browser, screenshot
from support.shared import FFPP, MESONET_WEIGHTS
from support.live_server import LiveServer, collect
from support.parts import needs

if chromium_unavailable() is None:
    from playwright.async_api import expect

pytestmark = needs("Chromium (with Playwright)", chromium_unavailable())

FAKE_VIDEO = FFPP / "fake" / "Deepfakes_519_515.mp4"
ALERT_TIMEOUT_S = 120.0
PAGE_TIMEOUT_S = 20.0
EXPLAIN_TIMEOUT_S = 90.0  # Grad-CAM of a few crops, MTCNN and BM25 on two busy cores


def ms(seconds: float) -> float:
    return seconds * 1000


@pytest.mark.slow
def test_clicking_explain_on_an_alert_shows_its_citations_and_heatmap(tmp_path):
    meso = build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)
    threads: list[str] = []

    def detector():
        from stream.live.faces import DetectorConfig, FaceDetector

        return FaceDetector(DetectorConfig(device="cpu"))

    inner = AlertExplainer(tmp_path, lambda: Retriever([kb.builtin()]),
                           lambda name: build_engine(name, weights_dir=MESONET_WEIGHTS, allow_download=False),
                           detector)

    def explainer(alert_id: str) -> dict:
        threads.append(threading.current_thread().name)
        return inner(alert_id)

    source = SourceConfig(name="studio", url=str(FAKE_VIDEO), loop=True)

    async def scenario(server: LiveServer) -> None:
        started = await collect(server.base.replace("http", "ws") + "/ws?streams=studio",
                                lambda msgs: any(m.get("type") == "alert" for m in msgs), ALERT_TIMEOUT_S)
        alert = next(m for m in started if m.get("type") == "alert")
        async with open_browser() as browser:
            page = await browser.new_page()
            await page.goto(server.base + "/")
            li = page.locator(f"#alert-{alert['id']}")
            await expect(li).to_have_attribute("data-snapshot", "loaded", timeout=ms(PAGE_TIMEOUT_S))
            button = li.locator("button.explain-button")
            await expect(button).to_have_text("Explain")
            await button.click()
            box = li.locator(".explain")
            await expect(box).to_have_attribute("data-state", "shown", timeout=ms(EXPLAIN_TIMEOUT_S))
            refs = li.locator(".explanation .citations li")
            assert await refs.count() >= 3
            await expect(refs.first).to_contain_text("MesoNet")
            await expect(refs.first).to_have_attribute("value", "1")
            text = await li.locator(".explanation .explanation-text").all_inner_texts()
            assert any("[1]" in t for t in text) and any(DEFAULT_MODEL in t for t in text), text
            heat = li.locator(".explanation img.heatmap")
            await expect(heat).to_have_js_property("complete", True, timeout=ms(PAGE_TIMEOUT_S))
            assert await heat.evaluate("img => img.naturalWidth") > 100
            record = json.loads((tmp_path / "evidence" / alert["id"] / "explanation.json").read_text())
            assert len(record["citations"]) == await refs.count()
            await screenshot(page, tmp_path / "explain.png")

    with LiveServer(ServeConfig(port=0, sources=[source], data_dir=tmp_path), [meso], explainer=explainer) as server:
        asyncio.run(scenario(server))
    assert threads and all(t.startswith("explain") for t in threads)
