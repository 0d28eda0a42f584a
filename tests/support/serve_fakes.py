"""Cheap stand-ins for the hardening, metrics and fuzz tests of the real serve app: no MTCNN, no decoding.

`Ticker` is a stream that delivers synthetic frames from its own thread (so overlays flow), `OneFace` a detector
that finds one face in the middle of every frame, `ClipFace.of(clip)` one that finds the face where a real clip
has it (for tests of what comes after detection, on real video), `AlwaysFake` an engine that calls every face fake
(so alerts start), `NoFaces` a detector that finds none, and `Idle` a stream that never delivers a frame.
`ConstantVoice` is a voice engine with a fixed p(fake) and a 1 s window (fast voice windows, for the voice alert's
lifecycle). `webrtc_offers`
makes real SDP offers and `request_state` is what a refused request must leave as it was.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import threading
import time

import numpy as np

from engines.base import Engine, InputSpec
from engines.voice_base import AudioSpec, VoiceEngine
from stream.live.faces.detector import Detection
from stream.live.sources import Frame, SourceState
from stream.live.sources.buffer import LatestFrameBuffer
from stream.live.sources.live import StreamSource

JSON_TYPE = "application/json"
FRAME = (96, 128)  # (h, w)


class NoFaces:
    """The scheduler's detector, without MTCNN: for tests about requests and transport, not faces."""

    def detect(self, images, profiles=None):
        return [[] for _ in images]


class OneFace:
    BOX = (32.0, 16.0, 96.0, 80.0)

    def detect(self, images, profiles=None):
        return [[Detection(np.array(self.BOX), 0.99, np.zeros((5, 2)))] for _ in images]

    def relocate(self, regions, scale=2.0, size=96):
        """The scheduler re-locates tracked faces between full detections: the face has not moved."""
        return [Detection(np.array(self.BOX), 0.99, np.zeros((5, 2))) for _ in regions]


class ClipFace:
    """A stand-in detector for tests about what comes after detection (alerts, evidence, channels) on a real clip:
    every frame's face is where real MTCNN finds it in the clip's first frame (the shared clips are talking heads
    that barely move), so a test pays for one MTCNN detection per clip and session instead of one per analysed
    frame. Keep the real `FaceDetector` where detection itself is under test."""

    def __init__(self, box, landmarks=None) -> None:
        self.box = np.asarray(box, dtype=np.float32)
        self.landmarks = np.zeros((5, 2), np.float32) if landmarks is None else np.asarray(landmarks, np.float32)

    @classmethod
    def of(cls, clip) -> "ClipFace":
        box, landmarks = _first_face(str(clip))
        return cls(box, landmarks)

    def _face(self) -> Detection:
        return Detection(self.box.copy(), 0.99, self.landmarks.copy())

    def detect(self, images, profiles=None):
        return [[self._face()] for _ in images]

    def relocate(self, regions, scale=2.0, size=96):
        return [self._face() for _ in regions]


@functools.lru_cache(maxsize=None)
def _first_face(clip: str):
    """(box, landmarks) of the most likely face MTCNN finds in the clip's first frame."""
    from stream.live.sources import AVSource

    frame = next(iter(AVSource(clip).frames()))
    faces = _mtcnn().detect([frame.image])[0]
    assert faces, f"MTCNN finds no face in the first frame of {clip}"
    best = max(faces, key=lambda d: d.prob)
    return best.box, best.landmarks


@functools.lru_cache(maxsize=1)
def _mtcnn():
    from stream.live.faces import FaceDetector

    return FaceDetector()


class AlwaysFake(Engine):
    def __init__(self, name: str = "always-fake") -> None:
        self.name, self.spec = name, InputSpec(size=32)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return np.full(len(crops), 0.99, dtype=np.float32)


class ConstantVoice(VoiceEngine):
    """A voice engine that says `p` of every window (1 s at 16 kHz by default), and keeps what it was given."""

    def __init__(self, p: float, samples: int = 16000, name: str = "constant-voice") -> None:
        self.name, self.spec, self.p = name, AudioSpec(samples=samples), p
        self.batches: list[np.ndarray] = []

    def predict(self, waveforms: np.ndarray) -> np.ndarray:
        self.check_batch(waveforms)
        self.batches.append(waveforms.copy())
        return np.full(len(waveforms), self.p, np.float32)


class Idle(StreamSource):
    """A stream that never delivers a frame."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "idle:", LatestFrameBuffer(), 1.0)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Ticker(StreamSource):
    """Delivers a random RGB frame every 1/fps seconds until stopped."""

    def __init__(self, name: str, fps: float = 20.0, analysed_fps: float = 10.0) -> None:
        super().__init__(name, "ticker:", LatestFrameBuffer(), analysed_fps)
        self.fps = fps
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._set_state(SourceState.CONNECTING)
        self._set_state(SourceState.STREAMING)
        self._thread = threading.Thread(target=self._run, name=f"ticker-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        i = 0
        while not self._stop.wait(1.0 / self.fps):
            image = rng.integers(0, 255, (*FRAME, 3), dtype=np.uint8)
            self.deliver(Frame.of(image=image, pts=i, time=i / self.fps, index=i, received=time.monotonic()))
            i += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._set_state(SourceState.STOPPED)


def add_source(server, source: StreamSource, timeout: float = 10.0) -> None:
    """Add a source on the server's loop (as webcam peers do) and wait until it is listed."""
    server.loop.call_soon_threadsafe(server.service.add_source, source)
    deadline = time.monotonic() + timeout
    while source.name not in server.service.names():
        assert time.monotonic() < deadline, f"{source.name} was not added"
        time.sleep(0.02)


def send(port: int, method: str, path: str, body: dict | str | None = None, *, address: str = "127.0.0.1",
         content_type: str | None = JSON_TYPE, **headers: str) -> tuple[int, str]:
    """One request with exactly these headers; Host is address:port unless given."""
    sent = {"Host": f"{address}:{port}"}
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    data = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    if data is not None and content_type is not None:
        sent["Content-Type"] = content_type
    conn = http.client.HTTPConnection(address, port, timeout=30)
    try:
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def webrtc_offers() -> dict[str, str]:
    """Real SDP offers made by aiortc: a webcam's (sends video) and a relay viewer's (receives video, sync
    channel)."""
    from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack

    from stream.live.server.relay import SYNC_CHANNEL

    async def make() -> dict[str, str]:
        webcam = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        webcam.addTrack(VideoStreamTrack())
        viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        viewer.addTransceiver("video", direction="recvonly")
        viewer.createDataChannel(SYNC_CHANNEL)
        sdps = {}
        for name, pc in (("webcam", webcam), ("viewer", viewer)):
            await pc.setLocalDescription(await pc.createOffer())
            sdps[name] = pc.localDescription.sdp
            await pc.close()
        return sdps

    return asyncio.run(make())


def request_state(server, saved: bool = False) -> tuple:
    """What a refused request must leave as it was: the streams, webcam peers and relay viewers, and with
    `saved` the persisted streams file."""
    from stream.live.server.persist import STREAMS_FILE
    from stream.live.server.relay import RELAY_KEY
    from stream.live.server.webcam import PEERS_KEY

    app = server.app
    state = (sorted(server.service.names()), len(app[PEERS_KEY]), len(app[RELAY_KEY].viewers))
    if saved:
        path = server.config.data_dir / STREAMS_FILE
        state += (path.read_text() if path.exists() else None,)
    return state
