"""serve against a real RTSP camera on loopback: boxes arrive, and survive the camera being killed and restarted
while a second source keeps flowing."""

import asyncio
import threading
import time

import pytest

from engines.registry import build_engine
from stream.config.serve import ServeConfig
from stream.live.sources.live import SourceConfig

from conftest import FFPP, MESONET_WEIGHTS
from live_server import LiveServer
from rtsp_server import RtspServer, unavailable_reason
from parts import needs

pytestmark = [pytest.mark.slow, needs("GStreamer's RTSP server", unavailable_reason())]
RETURN_DEADLINE_S = 5.0  # boxes must flow again this soon after the camera returns
OUTAGE_S = 3.0


class Recorder:
    """Keeps every websocket message with its arrival time, on a background thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import json

        import aiohttp

        async with aiohttp.ClientSession() as s, s.ws_connect(self.url) as ws:
            while not self._stop.is_set():
                try:
                    msg = await ws.receive(timeout=0.5)
                except asyncio.TimeoutError:
                    continue
                if msg.type.name != "TEXT":
                    return
                self.messages.append((time.monotonic(), json.loads(msg.data)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def boxes(self, stream: str, since: float = 0.0) -> list[float]:
        return [t for t, m in self.messages
                if t >= since and m["type"] == "overlay" and m["stream"] == stream and m["faces"]]

    def wait_boxes(self, stream: str, since: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.boxes(stream, since)
            if got:
                return got[0]
            time.sleep(0.05)
        return None


def test_rtsp_boxes_and_reconnect_while_file_keeps_flowing():
    engine = build_engine("meso4-df", weights_dir=MESONET_WEIGHTS, allow_download=False)
    with RtspServer(FFPP / "real" / "004.mp4") as camera:
        config = ServeConfig(sources=[
            SourceConfig(name="cam", url=camera.url, watchdog_s=3.0),
            SourceConfig(name="file", url=str(FFPP / "real" / "634.mp4"), loop=True),
        ])
        with LiveServer(config, [engine]) as server, Recorder(server.base.replace("http", "ws") + "/ws") as rec:
            assert rec.wait_boxes("cam", 0.0, 60) is not None, "no boxes from the RTSP camera"
            assert rec.wait_boxes("file", 0.0, 30) is not None
            camera.stop()
            killed = time.monotonic()
            time.sleep(OUTAGE_S)
            states = {m["state"] for t, m in rec.messages if t > killed and m["type"] == "status"
                      and m["stream"] == "cam"}
            assert states & {"reconnecting", "connecting"}, states
            camera.restart()
            back = time.monotonic()
            first = rec.wait_boxes("cam", back, RETURN_DEADLINE_S + 10)
            assert first is not None and first - back <= RETURN_DEADLINE_S, (
                f"boxes returned {None if first is None else round(first - back, 2)} s after the camera")
            # the file source never stopped: boxes in every second of the outage
            outage = rec.boxes("file", killed)
            outage = [t for t in outage if t <= back]
            assert len(outage) >= OUTAGE_S, len(outage)
            status = next(m for _, m in reversed(rec.messages) if m["type"] == "status" and m["stream"] == "cam")
            assert status["reconnects"] >= 1
