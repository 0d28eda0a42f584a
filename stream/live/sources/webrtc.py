"""A browser's webcam or shared screen as a live source (aiortc): its video track, and its audio track if the
browser sends one.

aiortc decodes on its own thread and queues every decoded frame without bound. The source keeps that queue empty
by taking frames as they arrive and holding only the newest, and the frames it replaced are counted as dropped.
Nothing is converted here: the frame goes on as decoded (`picture.py`), and only the frames the scheduler takes
become RGB, on its threads, so WebRTC I/O on the event loop never waits for a conversion.

What the link delivers is part of every face's quality and of the stream's status (`link_quality()`): the size
of the newest received frame, and the bitrate the peer's receiver measured (set by the signalling side,
`stream.live.server.webcam`, from `RTCRtpReceiver.getStats()`). A browser that lowers its resolution or bitrate
on a poor link then shows in the numbers, next to the verdict it produced.

Audio (a shared tab's or the system's sound, a webcam's microphone) is not scored here. The source keeps the
track (`audio_track`) and drains it as aiortc decodes it, because aiortc queues decoded frames without bound while
nobody reads them; `subscribe_audio(fn)` taps the decoded frames as `AudioChunk`s for the voice path and the
recorder. aiortc stamps audio and video with their own RTP clocks (each from a random start), so a chunk's time is
put on the video's clock once, when the first chunk after a picture arrives (`AudioClock`), and runs on with the
audio's own timestamps from there: sound before the first picture is drained, not handed on. A shared screen's
stream carries the `SCREEN` detection profile (stream/config/faces.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

from stream.config.faces import CAMERA, DetectionProfile
from stream.live.sources.base import AudioChunk, Frame, SourceState
from stream.live.sources.buffer import BufferPolicy, LatestFrameBuffer
from stream.live.sources.picture import Picture
from stream.live.sources.live import Attention, SourceConfig, StreamSource
from stream.messages import SourceStatus

log = logging.getLogger(__name__)

DEFAULT_ANALYSED_FPS: float = SourceConfig.model_fields["analysed_fps"].default


class _SkipCountingBuffer(LatestFrameBuffer):
    """A latest-frame buffer that also counts frames its producer discarded before putting them, so the
    source's `received`/`dropped` cover every frame the browser sent, not only the converted ones."""

    def count_skipped(self, n: int = 1) -> None:
        with self._cond:
            self.received += n
            self.dropped += n


class AudioClock:
    """Maps the audio track's timestamps onto the video's clock: one fixed offset, fixed at the first audio frame
    that comes after a picture (the picture's time plus how long ago it arrived, against that frame's own time).
    Trade-off: a fixed offset keeps the sound's own spacing exact (no jitter from arrival times) but inherits the
    network's delay difference between the two tracks at that moment, tens of milliseconds on a LAN."""

    def __init__(self) -> None:
        self.offset: float | None = None
        self._picture: tuple[float, float] | None = None  # (the newest picture's time, when it arrived)

    def picture(self, time_s: float, arrived: float) -> None:
        self._picture = (time_s, arrived)

    def to_video(self, audio_time: float, now: float) -> float | None:
        """`audio_time` on the video's clock; None before the first picture."""
        if self.offset is None:
            if self._picture is None:
                return None
            self.offset = self._picture[0] + (now - self._picture[1]) - audio_time
        return audio_time + self.offset


class WebRTCSource(StreamSource):
    """The video track of one peer. connecting -> streaming (first frame) -> stopped, or failed with `error`.

    Two tasks on the event loop: `_pump` empties aiortc's unbounded queue as frames arrive and keeps only the
    newest; `_convert` delivers the newest, as decoded. A frame replaced before it was delivered is counted as
    dropped, so a slow machine sheds frames instead of growing a backlog. With an
    audio track a third, `_pump_audio`, hands each decoded audio frame to the audio taps (none: dropped), timed on
    the video's clock.
    """

    def __init__(self, name: str, peer_id: str, track: MediaStreamTrack, on_stop: Callable[[str], object],
                 analysed_fps: float = DEFAULT_ANALYSED_FPS, audio: MediaStreamTrack | None = None,
                 detection: DetectionProfile = CAMERA) -> None:
        super().__init__(name, f"webrtc:{peer_id}", _SkipCountingBuffer(1, BufferPolicy.DROP_OLDEST), analysed_fps)
        self.buffer: _SkipCountingBuffer
        self.peer_id = peer_id
        self.detection = detection
        self._track = track
        self.audio_track = audio  # the peer's audio, None if it sent none
        self.audio_frames = 0  # decoded audio frames received so far
        self._audio_clock = AudioClock()
        self._on_stop = on_stop
        self._loop = asyncio.get_running_loop()
        self._newest: tuple[VideoFrame, int, float] | None = None  # frame, index, arrival time
        self._arrived = asyncio.Event()
        self._ended = False
        self._count = 0
        self._tasks: list[asyncio.Task] = []
        self.bitrate_kbps: float | None = None  # the receiver's measured bitrate; None until first measured

    @property
    def attention(self) -> int:
        """Always the sender's: the person sending a webcam or a shared screen is looking at its tile."""
        return Attention.SENDER

    def link_quality(self) -> dict[str, Any]:
        """The received frame size ([w, h], None before the first frame) and bitrate (kbit/s, None until
        measured)."""
        size = self.frame_size
        return {"received": list(size) if size else None, "bitrate_kbps": self.bitrate_kbps}

    def source_status(self) -> SourceStatus:
        return dataclasses.replace(super().source_status(), link=self.link_quality())

    # StreamSource may be started and stopped from any thread; the tasks live on the event loop.
    def start(self) -> None:
        self._set_state(SourceState.CONNECTING)
        self.buffer.reopen()
        self._loop.call_soon_threadsafe(self._start_tasks)

    def stop(self) -> None:
        if self.state is not SourceState.FAILED:  # a failure stays the stream's last word
            self._set_state(SourceState.STOPPED)
        self.buffer.close()
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop_tasks)

    def fail(self, error: str) -> None:
        self._set_state(SourceState.FAILED, error=error)
        log.warning("%s: %s", self.name, error)

    def _start_tasks(self) -> None:
        if self.state in (SourceState.STOPPED, SourceState.FAILED):
            return  # stopped before the loop got here
        self._tasks = [self._loop.create_task(self._pump(), name=f"webrtc-pump-{self.name}"),
                       self._loop.create_task(self._convert(), name=f"webrtc-convert-{self.name}")]
        if self.audio_track is not None:
            self._tasks.append(self._loop.create_task(self._pump_audio(), name=f"webrtc-audio-{self.name}"))

    def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._on_stop(self.peer_id)  # closes the peer if the stream was removed first (API); else a no-op

    async def _pump(self) -> None:
        try:
            while True:
                frame = cast(VideoFrame, await self._track.recv())
                if self._newest is not None:  # the converter did not get to it: replaced unconverted
                    self.buffer.count_skipped()
                self._newest = (frame, self._count, time.monotonic())
                self._count += 1
                self._arrived.set()
        except MediaStreamError:  # the browser ended its track, or the peer closed
            self._ended = True
            self._arrived.set()

    async def _pump_audio(self) -> None:
        """Drain the audio track into the taps. Its end (the browser stopped sharing sound) ends only this."""
        track = cast(MediaStreamTrack, self.audio_track)
        try:
            while True:
                frame = cast(AudioFrame, await track.recv())
                self.audio_frames += 1
                if not self._audio_subscribers:
                    continue
                now = time.monotonic()
                at = self._audio_clock.to_video(float(frame.time or 0.0), now)
                if at is not None:
                    self.deliver_audio(AudioChunk(frame, at, now))
        except MediaStreamError:
            log.info("%s: the browser ended its audio track", self.name)

    async def _convert(self) -> None:
        while True:
            if self._newest is None:
                if self._ended:
                    break
                await self._arrived.wait()
                self._arrived.clear()
                continue
            (frame, index, arrived), self._newest = self._newest, None
            if self.state not in (SourceState.CONNECTING, SourceState.STREAMING):
                return
            self._set_state(SourceState.STREAMING)
            self._audio_clock.picture(float(frame.time or 0.0), arrived)
            self.deliver(Frame(Picture(video=frame), frame.pts, float(frame.time or 0.0), index, arrived))
        if self.state in (SourceState.CONNECTING, SourceState.STREAMING):  # a hang-up, not a failure
            log.info("%s: the browser ended its video track", self.name)
            self._on_stop(self.peer_id)
