"""WebRTC with real parts: an aiortc client plays a shared FF++ video through the same /offer signalling a
browser uses, into the real serve app (MTCNN + MesoNet), and boxes come back over the websocket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.contrib.media import MediaPlayer

from engines.registry import DEFAULT_MODEL, build_engine
from stream.config.serve import ServeConfig
from stream.live.server.app import build_app
from stream.live.server.service import LiveService
from stream.live.server import webcam as webrtc
from stream.live.server.webcam import REGISTRY_KEY, PeerRegistry
from stream.live.sources import SourceState

from support.shared import FFPP, MESONET_WEIGHTS
from support.live_server import free_port

VIDEO = FFPP / "real" / "004.mp4"
BOXES_TIMEOUT_S = 30.0
STATE_TIMEOUT_S = 15.0  # connect and stream, or be gone
POLL_S = 0.05
JSON = {"Content-Type": "application/json"}  # what the page sends; raw bodies below are JSON text too


@pytest.fixture(scope="module")
def meso():
    return build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)


class Serve:
    """The real serve app on a free loopback port, in the test's own event loop."""

    def __init__(self, engines) -> None:
        self.service = LiveService(ServeConfig(port=free_port()), engines)
        self.app = build_app(self.service)
        self.base = f"http://127.0.0.1:{self.service.config.port}"
        self.runner = web.AppRunner(self.app)

    @property
    def registry(self) -> PeerRegistry:
        return self.app[REGISTRY_KEY]

    async def __aenter__(self) -> "Serve":
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.service.config.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


class Client:
    """A browser stand-in: one aiortc peer sending one video track."""

    def __init__(self, track=None) -> None:
        self.player = None if track is not None else MediaPlayer(str(VIDEO), loop=True)
        self.track = track or self.player.video
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: loopback, and offline CI
        self.pc.addTrack(self.track)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def call(self, http: aiohttp.ClientSession, base: str, name: str | None = None) -> dict:
        async with http.post(base + "/offer", json={"sdp": await self.offer(), "type": "offer", "name": name}) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        return answer

    async def hang_up(self) -> None:
        await self.pc.close()
        self.track.stop()


async def until(predicate: Callable[[], bool], timeout: float = STATE_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


async def first_message(ws, match: Callable[[dict], bool], timeout: float) -> dict | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except asyncio.TimeoutError:
            break
        if msg.type is aiohttp.WSMsgType.TEXT and match(data := json.loads(msg.data)):
            return data
    return None


def streaming(serve: Serve, peer: str) -> Callable[[], bool]:
    return lambda: peer in serve.registry and serve.registry.peers[peer].source.state is SourceState.STREAMING


def gone(serve: Serve, peer: str, stream: str) -> Callable[[], bool]:
    return lambda: peer not in serve.registry and stream not in serve.service.names()


@pytest.mark.slow
def test_webrtc_video_gets_boxes_and_every_way_of_closing_cleans_up(meso):
    async def scenario() -> None:
        async with Serve([meso]) as serve, aiohttp.ClientSession() as http:
            async with http.ws_connect(serve.base.replace("http", "ws") + "/ws") as ws:
                a = Client()
                answer = await a.call(http, serve.base, name="cam")
                peer = answer["peer"]
                assert answer["type"] == "answer" and answer["stream"] == "cam" and peer in serve.registry

                overlay = await first_message(
                    ws, lambda m: m["type"] == "overlay" and m["stream"] == "cam" and bool(m["faces"])
                    and m["faces"][0]["score"] is not None, BOXES_TIMEOUT_S)
                assert overlay is not None, "no overlay with a scored face within the time limit"
                face = overlay["faces"][0]
                assert len(face["box"]) == 4 and DEFAULT_MODEL in face["engines"]
                assert face["verdict"] == "low-quality" or 0.0 <= face["score"] <= 1.0
                assert overlay["frame_size"] == [1280, 720]

                async with http.get(serve.base + "/api/streams") as r:
                    status = (await r.json())["cam"]
                assert status["state"] == "streaming" and status["url"] == f"webrtc:{peer}"
                assert status["received"] >= status["dropped"] >= 0

                # a second offer for a taken name is refused and leaves no peer behind
                other = Client(VideoStreamTrack())
                async with http.post(serve.base + "/offer",
                                     json={"sdp": await other.offer(), "type": "offer", "name": "cam"}) as r:
                    assert r.status == 409
                await other.hang_up()
                assert len(serve.registry) == 1

                # 1. hang up through the signalling endpoint
                async with http.delete(f"{serve.base}/offer/{peer}") as r:
                    assert r.status == 200
                assert gone(serve, peer, "cam")()
                async with http.delete(f"{serve.base}/offer/{peer}") as r:
                    assert r.status == 404
                assert await until(lambda: a.pc.connectionState == "closed"), "the server did not hang up"
                await a.hang_up()

            # 2. removing the stream through the stream API closes its peer
            b = Client()
            answer = await b.call(http, serve.base)
            assert answer["stream"] == "webrtc"
            assert await until(streaming(serve, answer["peer"]))
            async with http.delete(serve.base + "/api/streams/webrtc") as r:
                assert r.status == 200
            assert await until(gone(serve, answer["peer"], "webrtc"))
            assert await until(lambda: b.pc.connectionState == "closed"), "the peer outlived its stream"
            await b.hang_up()

            # 3. the browser hangs up: the server notices and removes peer and stream
            c = Client()
            answer = await c.call(http, serve.base, name="cam3")
            assert await until(streaming(serve, answer["peer"]))
            await c.hang_up()
            assert await until(gone(serve, answer["peer"], "cam3"))

            # 4. shutdown closes peers that are still open
            d = Client()
            answer = await d.call(http, serve.base, name="cam4")
            assert await until(streaming(serve, answer["peer"]))
        assert len(serve.registry) == 0 and not serve.service.names()
        assert await until(lambda: d.pc.connectionState == "closed"), "shutdown left the peer open"
        await d.hang_up()

    asyncio.run(scenario())


def test_garbage_offers_are_refused_and_leave_no_peer(meso, monkeypatch):
    monkeypatch.setattr(webrtc, "CONNECT_TIMEOUT_S", 1.0)

    async def scenario() -> None:
        async with Serve([meso]) as serve, aiohttp.ClientSession() as http:
            no_video = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            no_video.createDataChannel("chat")
            await no_video.setLocalDescription(await no_video.createOffer())
            video = Client(VideoStreamTrack())
            cases = [
                ("{not json", "malformed JSON"),
                (json.dumps({"type": "offer"}), '"sdp"'),
                (json.dumps(["sdp", "offer"]), '"sdp"'),
                (json.dumps({"sdp": await video.offer(), "type": "answer"}), '"type": "offer"'),
                (json.dumps({"sdp": "garbage", "type": "offer"}), "no video track"),
                (json.dumps({"sdp": no_video.localDescription.sdp, "type": "offer"}), "no video track"),
                (json.dumps({"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "type": "offer"}),
                 "the SDP offer was refused: ICE username fragment or password is missing"),
                (json.dumps({"sdp": await video.offer(), "type": "offer", "name": "no spaces"}), "name: "),
            ]
            for body, reason in cases:
                async with http.post(serve.base + "/offer", data=body, headers=JSON) as r:
                    assert (r.status, reason in await r.text()) == (400, True), (body[:60], await r.text())
                assert len(serve.registry) == 0 and not serve.service.names()
            async with http.delete(serve.base + "/offer/nosuchpeer") as r:
                assert r.status == 404
            async with http.post(serve.base + "/offer", data="{}", headers={"Origin": "https://evil.example"}) as r:
                assert r.status == 403

            # answered, but the "browser" never applies the answer: closed at the deadline, with the reason
            async with http.ws_connect(serve.base.replace("http", "ws") + "/ws") as ws:
                async with http.post(serve.base + "/offer", json={"sdp": await video.offer(), "type": "offer"}) as r:
                    answer = await r.json()
                status = await first_message(ws, lambda m: m["type"] == "status" and m["state"] == "failed",
                                             STATE_TIMEOUT_S)
            assert status is not None and status["error"] == "the browser never connected"
            assert await until(gone(serve, answer["peer"], answer["stream"]))
            await no_video.close()
            await video.hang_up()

    asyncio.run(scenario())
