"""One websocket recorder for the tests: a client of `serve`'s (or the gateway's) `/ws` on its own thread that keeps
every message with its arrival time, so a test can wait on it and read it back while it drives the server.

    with WsRecorder(server.base.replace("http", "ws") + "/ws") as ws:
        first = ws.first("overlay", "cam", timeout=60, where=lambda m: m["faces"])
        states = [m["state"] for m in ws.of("status", "cam")]

It works the same from plain and from asyncio tests (`async with` too: its thread never touches the test's loop).
Entering waits until it is connected, so nothing sent after that is missed; with `reconnect=True` (a gateway that
is restarted, or not up yet) it does not wait and connects again whenever the connection drops.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable

CONNECT_TIMEOUT_S = 30.0
RECEIVE_POLL_S = 0.5  # how often the reader checks for close() while no message comes
RECONNECT_S = 0.3  # between two connection attempts with reconnect=True
WAIT_POLL_S = 0.05


class WsRecorder:
    """Every text message of one websocket, as (arrival time by `clock`, decoded JSON), in arrival order."""

    def __init__(self, url: str, *, reconnect: bool = False, headers: dict | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.reconnect = reconnect
        self.headers = headers
        self.clock = clock
        self._records: list[tuple[float, dict]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True, name="ws-recorder")

    # ---------------------------------------------------------------- lifetime

    def start(self) -> WsRecorder:
        self._thread.start()
        if not self.reconnect:
            if not self._connected.wait(CONNECT_TIMEOUT_S):
                self.close()
                raise AssertionError(f"could not connect to {self.url} within {CONNECT_TIMEOUT_S} s: {self._error!r}")
            if self._error is not None:
                raise AssertionError(f"could not connect to {self.url}: {self._error!r}")
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def __enter__(self) -> WsRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> WsRecorder:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    async def _run(self) -> None:
        import aiohttp

        while not self._stop.is_set():
            try:
                async with aiohttp.ClientSession() as session, \
                        session.ws_connect(self.url, headers=self.headers, max_msg_size=0) as ws:
                    self._connected.set()
                    while not self._stop.is_set():
                        try:
                            msg = await ws.receive(timeout=RECEIVE_POLL_S)
                        except asyncio.TimeoutError:
                            continue
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        with self._lock:
                            self._records.append((self.clock(), json.loads(msg.data)))
            except (aiohttp.ClientError, OSError) as exc:
                self._error = exc
                if not self.reconnect:
                    self._connected.set()  # wakes start(), which reports the error
                    return
            if not self.reconnect:
                return
            await asyncio.sleep(RECONNECT_S)

    # ---------------------------------------------------------------- reading

    @property
    def records(self) -> list[tuple[float, dict]]:
        """A copy of every (arrival time, message) so far."""
        with self._lock:
            return list(self._records)

    @property
    def all(self) -> list[dict]:
        """Every message so far."""
        return [m for _, m in self.records]

    def of(self, kind: str, stream: str | None = None, since: float = float("-inf"),
           where: Callable[[dict], object] | None = None) -> list[dict]:
        """The messages of `type` `kind` (of `stream`, arrived at or after `since`, passing `where`)."""
        return [m for _, m in self._matching(kind, stream, since, float("inf"), where)]

    def times(self, kind: str, stream: str | None = None, since: float = float("-inf"), until: float = float("inf"),
              where: Callable[[dict], object] | None = None) -> list[float]:
        """Arrival times of the matching messages, in order."""
        return [t for t, _ in self._matching(kind, stream, since, until, where)]

    def first(self, kind: str, stream: str | None = None, since: float = float("-inf"), timeout: float = 0.0,
              where: Callable[[dict], object] | None = None) -> float | None:
        """Arrival time of the first matching message, waiting up to `timeout` s for one; None if none came."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.times(kind, stream, since, where=where)
            if got:
                return got[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(WAIT_POLL_S)

    def _matching(self, kind, stream, since, until, where) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in self.records
                if since <= t <= until and m.get("type") == kind and (stream is None or m.get("stream") == stream)
                and (where is None or where(m))]
