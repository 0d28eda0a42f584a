"""A small Chrome DevTools Protocol client for the browser tests: Debian's Chromium, headless, driven over CDP.

Why CDP and not Playwright: CDP needs nothing beyond Chromium and aiohttp (already a dependency), works with
whatever Chromium version Debian ships, and downloads no browser. The tests need only a handful of calls:
open a page, evaluate JavaScript, click, type, and take a screenshot.

    async with Browser(extra_flags=[...]) as browser:
        page = await browser.new_page()
        await page.goto("http://127.0.0.1:8080/")
        await page.click("#webcam")
        await page.wait_for("window.__dfstream.ready", timeout=30)
        await page.screenshot(path)
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = os.environ.get("DFSTREAM_CHROMIUM", "/usr/bin/chromium")
# The flags every test browser runs with: no sandbox (containers, root), no GPU, nothing fetched from the network.
BASE_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--no-default-browser-check",
    "--autoplay-policy=no-user-gesture-required",
    # WebRTC between the page and aiortc on one host: allow loopback candidates (hosts with no other address)
    # and plain IP host candidates (no mDNS names the server would have to resolve).
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns,Translate,MediaRouter",
    "--window-size=1280,900",
)  # fmt: skip
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 30.0


def chromium_unavailable() -> str | None:
    """None when Chromium can be started, else why not (for pytest.skip)."""
    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} not found: install Debian's chromium (scripts/setup.sh test does)"
    return None


class CDPError(RuntimeError):
    pass


class Browser:
    """One headless Chromium process with a fresh profile, and the CDP connection to it."""

    def __init__(self, extra_flags: tuple[str, ...] | list[str] = ()) -> None:
        self.flags = [*BASE_FLAGS, *extra_flags]
        self.profile = Path(tempfile.mkdtemp(prefix="dfstream-chromium-"))
        self.proc: subprocess.Popen | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._listeners: list[tuple[str | None, str, asyncio.Queue | Any]] = []
        self._reader: asyncio.Task | None = None
        self.log_path = self.profile / "chromium.log"

    async def __aenter__(self) -> "Browser":
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, *self.flags, f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                await self.close()
                raise CDPError(f"Chromium did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._ws is not None:
            try:
                await asyncio.wait_for(self.send("Browser.close"), 5)
            except Exception:  # noqa: BLE001 - it is going away either way
                pass
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the renderers and GPU helper too
                self.proc.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    if "error" in data:
                        fut.set_exception(CDPError(f"{data['error'].get('message')}: {data['error'].get('data', '')}"))
                    else:
                        fut.set_result(data.get("result", {}))
            else:
                for session, method, sink in list(self._listeners):
                    if method == data.get("method") and session in (None, data.get("sessionId")):
                        sink(data.get("params", {}))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(CDPError("the browser connection closed"))

    async def send(self, method: str, params: dict | None = None, session: str | None = None,
                   timeout: float = CALL_TIMEOUT_S) -> dict:
        assert self._ws is not None
        msg_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        await self._ws.send_str(json.dumps(msg))
        return await asyncio.wait_for(fut, timeout)

    def on(self, method: str, callback, session: str | None = None) -> None:
        self._listeners.append((session, method, callback))

    async def new_page(self, width: int = 1280, height: int = 900) -> "Page":
        target = (await self.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session = (await self.send("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        await page.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.console: list[str] = []  # console messages and uncaught exceptions, for failure reports
        self._loaded = asyncio.Event()
        browser.on("Page.loadEventFired", lambda _p: self._loaded.set(), session)
        browser.on("Runtime.consoleAPICalled", self._console, session)
        browser.on("Runtime.exceptionThrown", self._exception, session)
        browser.on("Log.entryAdded", lambda p: self.console.append(
            f"[log {p['entry'].get('level')}] {p['entry'].get('text')} {p['entry'].get('url', '')}"), session)

    def _console(self, params: dict) -> None:
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
        self.console.append(f"[{params.get('type')}] {args}")

    def _exception(self, params: dict) -> None:
        details = params.get("exceptionDetails", {})
        self.console.append(f"[exception] {details.get('exception', {}).get('description') or details.get('text')}")

    async def send(self, method: str, params: dict | None = None, timeout: float = CALL_TIMEOUT_S) -> dict:
        return await self.browser.send(method, params, self.session, timeout)

    async def goto(self, url: str, timeout: float = CALL_TIMEOUT_S) -> None:
        self._loaded.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {result['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def evaluate(self, expression: str, timeout: float = CALL_TIMEOUT_S) -> Any:
        """The JSON value of `expression` (awaited if it is a promise)."""
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True}, timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(f"{expression!r} threw: "
                           f"{details.get('exception', {}).get('description') or details.get('text')}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, poll: float = 0.25) -> Any:
        """Poll `expression` until it is truthy; returns its value, or raises TimeoutError with the page log."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for {expression!r}; page console:\n"
                                   + "\n".join(self.console[-40:]))
            await asyncio.sleep(poll)

    async def click(self, selector: str) -> None:
        """A real mouse click (press and release) in the middle of the element."""
        box = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            f" e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();"
            f" return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        if box is None:
            raise CDPError(f"no element matches {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent",
                            {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1})

    async def type(self, selector: str, text: str) -> None:
        await self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                            f" e.focus(); e.select && e.select(); }})()")
        await self.send("Input.insertText", {"text": text})

    async def screenshot(self, *paths: Path | str) -> bytes:
        data = base64.b64decode((await self.send("Page.captureScreenshot", {"format": "png"}))["data"])
        for path in paths:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(data)
        return data
