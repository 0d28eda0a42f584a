"""The browser for the browser tests: Playwright (async API) driving Debian's Chromium, headless, through
`executable_path`, so no browser is downloaded (no `playwright install`).

    async with open_browser(extra_flags=[...]) as browser:
        page = await browser.new_page()
        await page.goto("http://127.0.0.1:8080/")
        await page.locator("#webcam").click()

Each page's console messages, uncaught exceptions and failed requests are kept; if the block raises, they are
printed (pytest shows them with the failure). The async API, not the sync one: the tests also run asyncio code
of their own (websocket clients), and the sync API cannot run inside a running event loop.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

CHROMIUM = os.environ.get("DFSTREAM_CHROMIUM", "/usr/bin/chromium")
# The flags every test browser runs with: no sandbox (containers, root), no GPU, nothing fetched from the network.
COMMON_FLAGS = (
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--no-default-browser-check",
    "--autoplay-policy=no-user-gesture-required",
)  # fmt: skip
# WebRTC between the page and aiortc on one host: allow loopback candidates (hosts with no other address) and
# plain IP host candidates (no mDNS names the server would have to resolve). Not a user's browser:
# `open_browser(webrtc_defaults=True)` leaves them out and keeps Chromium's own WebRTC settings.
WEBRTC_LOOPBACK_FLAGS = (
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns,Translate,MediaRouter",
)  # fmt: skip
WEBRTC_DEFAULT_FLAGS = ("--disable-features=Translate,MediaRouter",)
BASE_FLAGS = COMMON_FLAGS + WEBRTC_LOOPBACK_FLAGS
LAUNCH_TIMEOUT_MS = 30_000


def chromium_unavailable() -> str | None:
    """None when the browser tests can run, else why not (for pytest.skip)."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed: pip install -e .[test] (no `playwright install` needed)"
    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} not found: install Debian's chromium (scripts/setup.sh test does)"
    return None


class Browser:
    """One headless Chromium; each page gets its own context (fresh storage, its own permissions)."""

    def __init__(self, browser) -> None:
        self.browser = browser
        self.logs: list[tuple[str, list[str]]] = []  # (page label, its console lines)

    async def new_page(self, width: int = 1280, height: int = 900, permissions: list[str] | None = None):
        """A page in a fresh context. Permissions not granted here are denied (Playwright's default)."""
        context = await self.browser.new_context(viewport={"width": width, "height": height},
                                                 permissions=permissions or [])
        page = await context.new_page()
        lines: list[str] = []
        self.logs.append((f"page {len(self.logs) + 1}", lines))
        page.on("console", lambda m: lines.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda err: lines.append(f"[exception] {err}"))
        page.on("requestfailed", lambda r: lines.append(f"[request failed] {r.method} {r.url}: {r.failure}"))
        return page

    def console_report(self, last: int = 60) -> str:
        out = []
        for label, lines in self.logs:
            out.append(f"--- {label} console ({len(lines)} lines, last {last}) ---")
            out.extend(lines[-last:])
        return "\n".join(out)


@asynccontextmanager
async def open_browser(extra_flags: tuple[str, ...] | list[str] = (), webrtc_defaults: bool = False
                       ) -> AsyncIterator[Browser]:
    """A headless Chromium with BASE_FLAGS, or with Chromium's own WebRTC settings (mDNS host candidates, no
    loopback candidates) where `webrtc_defaults`, as a user's browser has them."""
    from playwright.async_api import async_playwright

    flags = COMMON_FLAGS + (WEBRTC_DEFAULT_FLAGS if webrtc_defaults else WEBRTC_LOOPBACK_FLAGS)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            args=[*flags, *extra_flags], timeout=LAUNCH_TIMEOUT_MS)
        browser = Browser(chromium)
        try:
            yield browser
        except BaseException:
            print(browser.console_report())
            raise
        finally:
            await chromium.close()


async def screenshot(page, *paths: Path | str) -> bytes:
    """One screenshot, written to every path."""
    data = await page.screenshot()
    for path in paths:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data
