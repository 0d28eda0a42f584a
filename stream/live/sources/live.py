"""Live sources: each runs its own decoder thread into a LatestFrameBuffer, so inference never stalls decoding
and one failing camera never blocks another. Status (state, rates, drops, last error) is published as data.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from enum import IntEnum
from typing import Any

from stream.config.faces import CAMERA, PROFILES, DetectionProfile
from stream.config.sources import DEVICE_PREFIXES, RTSP_SCHEMES, SourceConfig, is_network
from stream.live.sources.buffer import LatestFrameBuffer
from stream.live.stats import RateMeter
from stream.live.sources import AVSource, AudioChunk, Frame, Packet, SourceError, SourceState
from stream.live.sources.base import StateMachine
from stream.live.sources.urls import redact
from stream.messages import SourceStatus

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0
# How long FFmpeg may study a live stream before the first frame: long enough for a keyframe on a typical
# camera (GOP <= 1 s), short enough that a camera that comes back streams again within seconds.
RTSP_ANALYZE_US = 1_000_000


def validate_url(url: str) -> None:
    """Refuse addresses that cannot be a source, before any thread starts."""
    if url.startswith(RTSP_SCHEMES):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        try:
            parts.port
        except ValueError as exc:
            raise SourceError(f"{redact(url)}: malformed address ({exc})") from None
        if not parts.hostname:
            raise SourceError(f"{redact(url)}: malformed address (no host)")
    elif "://" in url and not is_network(url):
        raise SourceError(f"{redact(url)}: unsupported scheme")
    elif "://" not in url and not url.startswith(DEVICE_PREFIXES) and not Path(url).is_file():
        raise SourceError(f"{url}: no such file")


class Attention(IntEnum):
    """A named policy: how closely a stream is followed, the first thing the governor ranks streams by.

    SENDER: a browser's webcam or shared screen, whose sender looks at its tile (often a call in progress);
    VIEWERS: a camera or file with relay viewers on the page; NONE: nobody is looking. Trade-off: the page relays
    every tile it shows, so on a busy page the cameras all rank alike and only `priority` orders them, while the
    person who connected a webcam always comes first."""

    NONE = 0
    VIEWERS = 1
    SENDER = 2


class StreamSource(StateMachine):
    """What the scheduler and the status publisher see of any source: a name, a buffer, a state and counters."""

    # Whether `subscribe_packets` taps get the source's compressed packets (PyAV sources of H.264/HEVC); others
    # only have decoded frames, which a recorder must encode itself.
    has_packets = False
    # How the scheduler searches this source's frames for faces (a shared screen's differs from a camera's).
    detection: DetectionProfile = CAMERA

    def __init__(self, name: str, url: str, buffer: LatestFrameBuffer, analysed_fps: float) -> None:
        self.name = name
        self.url = redact(url)
        self.buffer = buffer
        self.analysed_fps = analysed_fps
        self._init_state()
        self.reconnects = 0
        self.frame_rate = RateMeter()
        self.last_frame_at: float | None = None
        self.frame_size: tuple[int, int] | None = None
        self._subscribers: list[Callable[[Frame], None]] = []
        self._packet_subscribers: list[Callable[[Packet], None]] = []
        self._audio_subscribers: list[Callable[[AudioChunk], None]] = []
        self._audio_packet_subscribers: list[Callable[[Packet], None]] = []
        self.audio_chunks = 0  # decoded sound chunks handed to audio taps so far
        self._ring_status: Callable[[], dict[str, Any]] | None = None  # a recording ring fed by this source
        self.priority = 0  # under load a higher one keeps its rate longer (SourceConfig.priority, the API)
        self._watchers = 0  # relay viewers now (watch())
        self._watch_lock = threading.Lock()

    @property
    def attention(self) -> int:
        """How closely someone follows this stream now (`Attention`): under load the more closely followed keep
        their rate longest (scheduler/governor.py)."""
        return Attention.VIEWERS if self._watchers > 0 else Attention.NONE

    @property
    def watched(self) -> bool:
        return self.attention > Attention.NONE

    def watch(self) -> Callable[[], None]:
        """Count one more viewer (the relay, while the stream has viewers); returns the function that ends it
        (calling it twice is harmless)."""
        with self._watch_lock:
            self._watchers += 1
        done = threading.Event()

        def unwatch() -> None:
            with self._watch_lock:
                if not done.is_set():
                    done.set()
                    self._watchers -= 1

        return unwatch

    def deliver(self, frame: Frame) -> None:
        self.frame_rate.tick(frame.received)
        self.last_frame_at = frame.received
        self.frame_size = frame.size
        self.buffer.put(frame)
        for fn in self._subscribers:
            try:
                fn(frame)
            except Exception:  # a viewer's bug must never stop the source feeding the scheduler
                log.exception("%s: frame subscriber failed", self.name)

    def link_quality(self) -> dict[str, Any]:
        """What the link did to the picture (received size, bitrate), for sources that know it (WebRTC)."""
        return {}

    def subscribe(self, fn: Callable[[Frame], None]) -> Callable[[], None]:
        """Call `fn(frame)` for every decoded frame, on the decoding thread (so `fn` must be quick: hand the
        frame on, never encode there). Returns the function that unsubscribes; calling it twice is harmless.
        Like aiortc's `MediaRelay.subscribe`, this replaces patching the source."""
        self._subscribers = [*self._subscribers, fn]  # copy on write: deliver() iterates without a lock

        def unsubscribe() -> None:
            self._subscribers = [f for f in self._subscribers if f is not fn]

        return unsubscribe

    @property
    def frame_taps(self) -> tuple[Callable[[Frame], None], ...]:
        """The functions `subscribe` gave frames to now (a relay, an evidence ring...): who is still tapping."""
        return tuple(self._subscribers)

    def subscribe_packets(self, fn: Callable[[Packet], None]) -> Callable[[], None]:
        """Call `fn(packet)` for every compressed packet, on the decoding thread (quick, as for `subscribe`).
        Taken up at the next (re)connection. Returns the function that unsubscribes."""
        self._packet_subscribers = [*self._packet_subscribers, fn]

        def unsubscribe() -> None:
            self._packet_subscribers = [f for f in self._packet_subscribers if f is not fn]

        return unsubscribe

    def subscribe_audio(self, fn: Callable[[AudioChunk], None]) -> Callable[[], None]:
        """Call `fn(chunk)` for every run of decoded sound, on the thread that has it (a PyAV source's decoder
        thread; the event loop for WebRTC), so `fn` must be quick. A PyAV source decodes its sound only while
        someone listens; subscribe before `start` (the audio track is opened with the container). Returns the
        unsubscriber."""
        self._audio_subscribers = [*self._audio_subscribers, fn]

        def unsubscribe() -> None:
            self._audio_subscribers = [f for f in self._audio_subscribers if f is not fn]

        return unsubscribe

    def subscribe_audio_packets(self, fn: Callable[[Packet], None]) -> Callable[[], None]:
        """Call `fn(packet)` for every compressed audio packet (`Packet.is_audio`), on the decoding thread; sources
        without packets of their own (WebRTC) have none. Returns the unsubscriber."""
        self._audio_packet_subscribers = [*self._audio_packet_subscribers, fn]

        def unsubscribe() -> None:
            self._audio_packet_subscribers = [f for f in self._audio_packet_subscribers if f is not fn]

        return unsubscribe

    def wants_audio(self) -> bool:
        return bool(self._audio_subscribers)

    def wants_audio_packets(self) -> bool:
        return bool(self._audio_packet_subscribers)

    def deliver_audio(self, chunk: AudioChunk) -> None:
        self.audio_chunks += 1
        for fn in self._audio_subscribers:
            try:
                fn(chunk)
            except Exception:  # a listener's bug must never stop the source
                log.exception("%s: audio subscriber failed", self.name)

    def deliver_audio_packet(self, packet: Packet) -> None:
        for fn in self._audio_packet_subscribers:
            try:
                fn(packet)
            except Exception:
                log.exception("%s: audio packet subscriber failed", self.name)

    def report_ring(self, status: Callable[[], dict[str, Any]]) -> Callable[[], None]:
        """Report `status()` (a recording ring fed by this source: evidence/recorder.py) in this source's status,
        until the returned function is called."""
        self._ring_status = status

        def stop() -> None:
            if self._ring_status is status:
                self._ring_status = None

        return stop

    def deliver_packet(self, packet: Packet) -> None:
        for fn in self._packet_subscribers:
            try:
                fn(packet)
            except Exception:
                log.exception("%s: packet subscriber failed", self.name)

    def source_status(self) -> SourceStatus:
        ring = self._ring_status  # read once: the recorder may stop reporting meanwhile
        return SourceStatus(state=self.state.value, url=self.url, fps=round(self.frame_rate.rate(), 2),
                            received=self.buffer.received, dropped=self.buffer.dropped, reconnects=self.reconnects,
                            error=self.error, frame_size=self.frame_size, ring=ring() if ring is not None else None)

    def status(self) -> dict[str, Any]:
        """The source's status as JSON (the stream API's view of it)."""
        return self.source_status().to_message()

    def start(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def open_source(c: SourceConfig, sample_fps: float | None = None,
                on_packet: Callable[[Packet], None] | None = None, audio: StreamSource | None = None) -> AVSource:
    """An `AVSource` for a configured address with the options its kind needs (also `dfstream baseline`'s
    live input); `audio` gets its sound (sources/audio.py)."""
    options: dict[str, str] = {}
    fmt = None
    if c.kind == "rtsp":
        # TCP by default: UDP loses packets (grey smears) on busy networks and through NAT.
        options = {"rtsp_transport": c.rtsp_transport, "timeout": str(int(c.watchdog_s * 1e6)),
                   "analyzeduration": str(RTSP_ANALYZE_US)}
    elif c.kind == "device":
        fmt = c.device_format
    return AVSource(c.url, sample_fps=sample_fps, options=options, format=fmt, strict_length=False,
                    timeout=(OPEN_TIMEOUT_S, c.watchdog_s), on_packet=on_packet, audio=audio,
                    rgb_on_decode=c.convert == "on-decode")


class AVLiveSource(StreamSource):
    """A file, RTSP camera or local device decoded by PyAV on a daemon thread, reconnecting with back-off."""

    has_packets = True

    def __init__(self, config: SourceConfig, rng: random.Random | None = None) -> None:
        super().__init__(config.name, config.url, LatestFrameBuffer(1, config.policy), config.analysed_fps)
        self.priority = config.priority
        self.config = config
        self.detection = PROFILES[config.detection]
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _open(self) -> AVSource:
        listened = self._audio_subscribers or self._audio_packet_subscribers
        return open_source(self.config, on_packet=self.deliver_packet if self._packet_subscribers else None,
                           audio=self if listened else None)

    def start(self) -> None:
        self._stop.clear()
        self.buffer.reopen()
        self._thread = threading.Thread(target=self._run, name=f"source-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.buffer.close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._set_state(SourceState.STOPPED)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self._set_state(SourceState.CONNECTING if attempt == 0 else SourceState.RECONNECTING)
            try:
                got_frames = self._play_once()
            except SourceError as exc:
                self._set_state(self.state, error=str(exc))
                log.warning("%s: %s", self.name, exc)
                got_frames = False
                if self.config.kind == "file" and not self.config.loop:
                    self._set_state(SourceState.FAILED)
                    return
            else:
                if self._stop.is_set():
                    break
                if self.config.kind == "file":
                    if self.config.loop and got_frames:
                        attempt = 0
                        continue
                    self._set_state(SourceState.ENDED)
                    return
                self._set_state(self.state, error="stream ended")
            attempt = 0 if got_frames else attempt + 1
            self.reconnects += 1
            self._set_state(SourceState.RECONNECTING)
            if self._stop.wait(self.config.backoff.delay(attempt, self._rng)):
                break
        self._set_state(SourceState.STOPPED)

    def _play_once(self) -> bool:
        """Decode until the source ends, fails or the source is stopped; True if any frame arrived."""
        src = self._open()
        got = False
        pace_origin: tuple[float, float] | None = None
        last_at: float | None = None
        try:
            for frame in src.frames():
                if self._stop.is_set():
                    return got
                if self.config.kind != "file":
                    # The watchdog is PyAV's read timeout, but FFmpeg swallows the first timed-out read of a
                    # silent camera: it flushes its parser and hands back the frame that parser held, and only
                    # the next read fails, a second watchdog_s later. A frame that comes after watchdog_s of
                    # silence is that flushed tail: stop here, so a silent camera reconnects after watchdog_s.
                    if last_at is not None and frame.received - last_at >= self.config.watchdog_s:
                        raise SourceError(f"{self.url}: no frame for {frame.received - last_at:.1f} s "
                                          f"(watchdog {self.config.watchdog_s:g} s)")
                    last_at = frame.received
                if not got:
                    self._set_state(SourceState.STREAMING, error=None)
                    got = True
                if self.config.kind == "file" and self.config.pace:
                    if pace_origin is None:
                        pace_origin = (time.monotonic(), frame.time)
                    wait = pace_origin[0] + (frame.time - pace_origin[1]) - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        return got
                    frame = Frame(frame.picture, frame.pts, frame.time, frame.index, time.monotonic())
                self.deliver(frame)
        finally:
            src.close()
        return got
