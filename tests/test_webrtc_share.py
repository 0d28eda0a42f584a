"""A shared screen over WebRTC, from the server's side: an aiortc peer stands in for the browser and offers what
a page's "Share screen" sends (`kind: screen`, a video track and the tab's audio track), into the real serve
app. The stream takes the screen's detection profile, its audio is received and tapped, and what an offer may
not carry is refused without leaving a peer or a stream behind. (The page itself, in Chromium:
tests/test_browser_share.py.)"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from aiortc import AudioStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from stream.config.faces import CAMERA, SCREEN
from stream.config.serve import ServeConfig
from stream.live.server.webcam import PEERS_KEY
from stream.live.sources import SourceState

from support.live_server import LiveServer
from support.serve_fakes import NoFaces

STATE_TIMEOUT_S = 15.0
AUDIO_FRAMES = 25  # half a second of 20 ms frames
SOUND_LATE_S = 2.5  # the tab's sound starts this long after its pictures (aiortc's receiver counts each track's
# time from its own first packet, so without the audio clock the sound would be this far off the pictures)


async def until(predicate, timeout: float = STATE_TIMEOUT_S, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


class LateSound(AudioStreamTrack):
    """Silence whose first frame comes `SOUND_LATE_S` after the call starts (a tab that begins to play later)."""

    def __init__(self) -> None:
        super().__init__()
        self._waited = False

    async def recv(self):
        if not self._waited:
            self._waited = True
            await asyncio.sleep(SOUND_LATE_S)
        return await super().recv()


def offer_pc(audio_tracks: int = 1) -> RTCPeerConnection:
    """A browser stand-in sending one video track and `audio_tracks` audio tracks (a tab's sound, starting late)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(VideoStreamTrack())
    for _ in range(audio_tracks):
        pc.addTrack(LateSound())
    return pc


async def send(http: aiohttp.ClientSession, base: str, pc: RTCPeerConnection, **extra) -> tuple[int, str]:
    await pc.setLocalDescription(await pc.createOffer())
    body = {"sdp": pc.localDescription.sdp, "type": "offer", **extra}
    async with http.post(base + "/offer", json=body) as r:
        return r.status, await r.text()


def media_directions(sdp: str) -> list[tuple[str, str]]:
    """(kind, direction) of every media section of an SDP."""
    out = []
    for section in sdp.split("m=")[1:]:
        kind = section.split(" ", 1)[0]
        direction = next((d for d in ("sendrecv", "sendonly", "recvonly", "inactive") if f"a={d}" in section), "")
        out.append((kind, direction))
    return out


def test_a_screen_offer_streams_with_the_screen_profile_and_its_audio_is_tapped():
    async def scenario(server: LiveServer) -> None:
        async with aiohttp.ClientSession() as http:
            pc = offer_pc(audio_tracks=2)  # a second audio section is answered inactive
            status, text = await send(http, server.base, pc, name="Team-call", kind="screen")
            assert status == 200, text
            answer = json.loads(text)
            assert answer["stream"] == "Team-call"
            assert media_directions(answer["sdp"]) == [("video", "recvonly"), ("audio", "recvonly"),
                                                       ("audio", "inactive")]
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
            source = next(s for s in server.service.scheduler.sources() if s.name == "Team-call")
            assert source.detection is SCREEN and source.audio_track is not None
            got: list = []
            pictures: list = []
            source.subscribe(pictures.append)
            unsubscribe = source.subscribe_audio(got.append)
            assert await until(lambda: source.state is SourceState.STREAMING and len(got) >= AUDIO_FRAMES)
            chunk = got[-1]
            assert chunk.frame.sample_rate == 48000 and chunk.frame.samples > 0  # decoded Opus, as aiortc gives it
            # on the video's clock (aiortc's receiver starts each track's time at its own first packet; the sound
            # began SOUND_LATE_S after the pictures): the sound's time is within a second of the newest picture's
            assert abs(chunk.time - pictures[-1].time) < 1.0, (chunk.time, pictures[-1].time)
            unsubscribe()
            n = len(got)
            # without a tap the track is still drained (aiortc would queue it without bound)
            before = source.audio_frames
            assert await until(lambda: source.audio_frames >= before + AUDIO_FRAMES)
            assert len(got) == n

            # a webcam offer without sound: the camera profile, no audio track
            cam = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            cam.addTrack(VideoStreamTrack())
            status, text = await send(http, server.base, cam, name="cam")
            assert status == 200, text
            await cam.setRemoteDescription(RTCSessionDescription(*(json.loads(text)[k] for k in ("sdp", "type"))))
            webcam = next(s for s in server.service.scheduler.sources() if s.name == "cam")
            assert webcam.detection is CAMERA and webcam.audio_track is None
            assert await until(lambda: webcam.state is SourceState.STREAMING)

            # the browser hangs up: the peer goes and the stream with it
            await pc.close()
            assert await until(lambda: "Team-call" not in server.service.names())
            await cam.close()
            assert await until(lambda: len(server.app[PEERS_KEY]) == 0)  # type: ignore[union-attr]

    with LiveServer(ServeConfig(port=0), [], detector=NoFaces()) as server:
        asyncio.run(scenario(server))


def test_offers_of_an_unknown_kind_are_refused_and_leave_nothing():
    async def scenario(server: LiveServer) -> None:
        async with aiohttp.ClientSession() as http:
            for kind in ("tv", 7, None, ["screen"]):
                pc = offer_pc()
                status, text = await send(http, server.base, pc, name="call", kind=kind)
                assert (status, text) == (400, "kind: one of webcam, screen"), (kind, status, text)
                assert not server.service.names()
                assert len(server.app[PEERS_KEY]) == 0  # type: ignore[union-attr]
                await pc.close()

    with LiveServer(ServeConfig(port=0), [], detector=NoFaces()) as server:
        asyncio.run(scenario(server))
