"""Run the real `serve` app (aiohttp + LiveService) on a free loopback port in a background thread, for tests."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from engines.base import Engine
from stream.config.serve import ServeConfig
from stream.live.server.app import build_app
from stream.live.server.service import LiveService


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, config: ServeConfig, engines: Sequence[Engine], detector=None, explainer=None,
                 remote=None, voice_engines: Sequence = ()) -> None:
        """`remote`: the LiveService's RemoteStreams (where cameras and their evidence live when not here);
        `voice_engines`: the voice models judging the streams' sound (none: sound is not judged)."""
        # a port the test did not choose (the default 8080 included) is a free one: never collide with a real serve
        explicit = "port" in config.model_fields_set and config.port
        update = {"port": config.port if explicit else free_port()}
        if "data_dir" not in config.model_fields_set:  # never write evidence into the checkout
            import tempfile

            update["data_dir"] = Path(tempfile.mkdtemp(prefix="dfstream-data-"))
        self.config = config.model_copy(update=update)
        self.service = LiveService(self.config, engines, detector, remote=remote, voice_engines=voice_engines)
        self.explainer = explainer  # build_app's: the "Explain" button's builder (None: 503)
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def app(self) -> web.Application:
        """The running aiohttp application (its app keys: the relay hub, the WebRTC peers...)."""
        assert self._runner is not None, "the server is not started"
        return self._runner.app

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(build_app(self.service, self.explainer))
        await self._runner.setup()
        await web.TCPSite(self._runner, self.config.host, self.config.port).start()

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(60)  # type: ignore[union-attr]
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        if body is not None:  # serve refuses state-changing bodies of any other type (auth.py)
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()


async def collect(url: str, until, timeout: float, headers: dict | None = None) -> list[dict]:
    """Read websocket messages until `until(messages)` is true or `timeout` passes."""
    import aiohttp

    out: list[dict] = []
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers=headers) as ws:
            while time.monotonic() < deadline and not until(out):
                try:
                    msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if msg.type.name != "TEXT":
                    break
                out.append(json.loads(msg.data))
    return out
