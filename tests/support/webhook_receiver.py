"""A real HTTP webhook receiver (aiohttp) on a loopback port, in its own thread, that can be taken down and
brought back on the same port. It checks each POST's signature and honours the Idempotency-Key the way a
careful receiver does: a key seen before is answered 200 but not processed again."""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web

from support.live_server import free_port
from stream.live.bus.channels.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify


class Receiver:
    def __init__(self, secret: bytes, port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.processed: list[dict] = []  # first delivery of each key, in arrival order
        self.posts: list[dict] = []  # every POST: {"key", "signed", "header_key", "msg"}
        self._seen: set[str] = set()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._gate: asyncio.Event | None = None  # while set up and not released, every POST waits (a slow receiver)
        self.arrived = 0  # POSTs that reached the handler, held ones included

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        self.arrived += 1
        if self._gate is not None:
            await self._gate.wait()
        body = await request.read()
        msg = json.loads(body)
        post = {"key": msg.get("key"), "signed": verify(self.secret, body, request.headers.get(SIGNATURE_HEADER, "")),
                "header_key": request.headers.get(IDEMPOTENCY_HEADER), "msg": msg}
        with self.lock:
            self.posts.append(post)
            if not post["signed"]:
                return web.Response(status=401, text="bad signature")
            if post["header_key"] not in self._seen:
                self._seen.add(post["header_key"])
                self.processed.append(msg)
        return web.Response(text="ok")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def up(self) -> "Receiver":
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def down(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
            self._runner = None

    def hold(self) -> None:
        """Make every POST wait until `release()`, as a receiver stuck on a slow database would."""
        async def make() -> None:
            self._gate = asyncio.Event()
        asyncio.run_coroutine_threadsafe(make(), self.loop).result(10)

    def release(self) -> None:
        self.loop.call_soon_threadsafe(lambda: self._gate.set() if self._gate is not None else None)

    def keys(self) -> list[str]:
        with self.lock:
            return [m["key"] for m in self.processed]

    def close(self) -> None:
        self.down()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
