"""In real Chromium: a page served from a second local origin (another port on 127.0.0.1: same site, other
origin) sends `fetch` POSTs with `text/plain` bodies to serve, the kind of request that needs no CORS preflight.
Each is refused, and no stream is added."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from stream.config.serve import ServeConfig

from support.browser import chromium_unavailable, open_browser
from support.live_server import LiveServer, free_port
from support.parts import needs
from support.serve_fakes import NoFaces

pytestmark = needs("Chromium (with Playwright)", chromium_unavailable())

ATTACK = """<!doctype html><title>other origin</title><script>
window.attempts = (async () => {
  const body = JSON.stringify({url: "rtsp://127.0.0.1:9/x", name: "csrf"});
  const out = [];
  for (const mode of ["cors", "no-cors"]) {
    try {
      const r = await fetch(TARGET + "/api/streams", {method: "POST", mode, body,
                                                     headers: {"Content-Type": "text/plain"}});
      out.push({mode, status: r.status, type: r.type});
    } catch (e) { out.push({mode, error: String(e)}); }
  }
  return out;
})();
</script>"""


def test_text_plain_fetch_from_another_origin_adds_no_stream(tmp_path):
    with LiveServer(ServeConfig(port=0, data_dir=tmp_path), [], detector=NoFaces()) as live:
        before = sorted(live.service.names())
        statuses: list[int] = []

        async def main() -> list[dict]:
            async def attack(request: web.Request) -> web.Response:
                return web.Response(text=ATTACK.replace("TARGET", json.dumps(live.base)), content_type="text/html")

            other = web.Application()
            other.router.add_get("/", attack)
            runner = web.AppRunner(other)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                async with open_browser() as browser:
                    page = await browser.new_page()
                    page.on("response", lambda r: statuses.append(r.status) if "/api/streams" in r.url else None)
                    await page.goto(f"http://127.0.0.1:{port}/")
                    return await asyncio.wait_for(page.evaluate("window.attempts"), 30)
            finally:
                await runner.cleanup()

        attempts = asyncio.run(main())
        assert sorted(live.service.names()) == before and "csrf" not in live.service.names(), attempts
        # the page learns nothing: the cors fetch fails (no CORS headers), the no-cors one is opaque
        assert attempts[0]["mode"] == "cors" and "error" in attempts[0], attempts
        assert attempts[1] == {"mode": "no-cors", "status": 0, "type": "opaque"}, attempts
        assert statuses and all(s == 403 for s in statuses), statuses  # what serve answered
