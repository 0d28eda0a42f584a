"""Websocket fuzz: a few hundred malformed, oversized and random messages from one client, against the real
serve app. The server stays up, and a second client keeps receiving overlays throughout."""

from __future__ import annotations

import asyncio
import json
import random
import time

import aiohttp
import pytest

from stream.config.serve import ServeConfig

from support.live_server import LiveServer
from support.serve_fakes import NoFaces, Ticker, add_source, send

MAX_BYTES = 4096
MESSAGES = 400
WINDOW_S = 0.5  # the watcher's receive timeout
PACE_S = 0.006  # between fuzz messages, so the fuzz lasts a few seconds (longer than MAX_GAP_S)
MAX_GAP_S = 2.0  # the longest the watcher may go without an overlay while the fuzzer runs (20 analysed fps)


def fuzz_messages(rng: random.Random) -> list[tuple[str, str | bytes]]:
    """(kind, payload): "text" or "binary" frames, some over the size limit."""
    fixed: list[tuple[str, str | bytes]] = [
        ("text", ""), ("text", "{"), ("text", "null"), ("text", "[]"), ("text", "42"), ("text", '"subscribe"'),
        ("text", "[" * 3000), ("text", '{"a":' * 1500), ("text", "\x00\x01\x02"), ("text", "\ud7ff\ue000"),
        ("text", '{"type": "subscribe", "streams": [1, 2]}'), ("text", '{"type": "subscribe", "streams": "cam"}'),
        ("text", '{"type": "subscribe", "streams": {"cam": 1}}'), ("text", '{"type": ["subscribe"]}'),
        ("text", '{"type": "subscribe", "streams": [' + ",".join(['"x"'] * 500) + "]}"),
        ("text", '{"type": "add", "url": "/etc/passwd"}'), ("text", "1e999999"), ("text", "NaN"),
        ("binary", b"\xff\xfe\xfd"), ("binary", b""), ("text", "x" * (MAX_BYTES + 1)),
        ("binary", bytes(MAX_BYTES * 4)),
    ]
    out = list(fixed)
    while len(out) < MESSAGES:
        roll = rng.random()
        n = rng.choice([1, 10, 100, 1000, MAX_BYTES - 1, MAX_BYTES * 2])
        if roll < 0.4:
            out.append(("text", "".join(chr(rng.randrange(0x20, 0xD7FF)) for _ in range(min(n, 1000)))))
        elif roll < 0.6:
            out.append(("binary", rng.randbytes(n)))
        elif roll < 0.8:
            out.append(("text", json.dumps({"type": rng.choice(["subscribe", "status", None, 1]),
                                            "streams": rng.choice([None, [], ["cam"], [None], "x", 5])})))
        else:
            out.append(("text", json.dumps({"junk": "y" * n})))
    rng.shuffle(out)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # the rate limit is set high so every message reaches the parser (the limit has its own tests)
    config = ServeConfig(port=0, max_message_bytes=MAX_BYTES, ws_messages_per_s=10_000,
                         data_dir=tmp_path_factory.mktemp("fuzz"))
    with LiveServer(config, [], detector=NoFaces()) as live:
        add_source(live, Ticker("cam", fps=30, analysed_fps=20))
        yield live


def test_fuzzed_client_never_stops_the_overlays(server, caplog):
    url = server.base.replace("http", "ws") + "/ws"
    messages = fuzz_messages(random.Random(1234))

    async def fuzz(http: aiohttp.ClientSession, done: asyncio.Event) -> dict[str, int]:
        counts = {"sent": 0, "reconnects": 0, "replies": 0}
        ws = await http.ws_connect(url)
        try:
            for kind, payload in messages:
                for _ in range(3):  # an oversized message closes the connection (1009): come back, resend
                    if ws.closed:
                        counts["reconnects"] += 1
                        ws = await http.ws_connect(url)
                    try:
                        await (ws.send_str(payload) if kind == "text" else ws.send_bytes(payload))  # type: ignore[arg-type]
                        counts["sent"] += 1
                        break
                    except (ConnectionResetError, aiohttp.ClientConnectionError):
                        await ws.close()
                try:  # read whatever came back, without waiting long
                    while True:
                        msg = await ws.receive(timeout=0.001)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        counts["replies"] += 1
                except asyncio.TimeoutError:
                    pass
                await asyncio.sleep(PACE_S)
        finally:
            await ws.close()
            done.set()
        return counts

    async def watch(http: aiohttp.ClientSession, done: asyncio.Event) -> list[float]:
        """The times at which overlays arrived."""
        seen: list[float] = []
        async with http.ws_connect(url + "?streams=cam") as ws:
            while not done.is_set():
                try:
                    msg = await ws.receive(timeout=WINDOW_S)
                except asyncio.TimeoutError:
                    continue
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                if json.loads(msg.data).get("type") == "overlay":
                    seen.append(time.monotonic())
        return seen

    async def main():
        async with aiohttp.ClientSession() as http:
            done = asyncio.Event()
            watcher = asyncio.create_task(watch(http, done))
            await asyncio.sleep(WINDOW_S)  # the watcher is receiving before the fuzz starts
            started = time.monotonic()
            counts = await fuzz(http, done)
            return counts, started, time.monotonic(), await watcher

    counts, started, ended, seen = asyncio.run(main())
    assert counts["sent"] == MESSAGES and counts["reconnects"] >= 1 and counts["replies"] > 0, counts
    during = [t for t in seen if started <= t <= ended]
    assert during, "no overlay reached the second client while the fuzzer ran"
    marks = [started, *during, ended]
    gaps = [b - a for a, b in zip(marks, marks[1:])]
    assert ended - started > MAX_GAP_S, "the fuzz was too short to show anything"
    assert max(gaps) < MAX_GAP_S, f"overlays stopped for {max(gaps):.2f} s during the fuzz"
    assert send(server.config.port, "GET", "/healthz")[0] == 200
    assert server.service.names() == {"cam"}
    failures = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") and r.name.startswith("stream")]
    assert not failures, [r.getMessage() for r in failures]  # every message was answered, none raised
