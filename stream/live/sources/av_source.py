"""A PyAV-decoded video source: files now, and the same class for RTSP and local devices.

It is an object with a state (not a helper function) because live sources reconnect, report status and count
frames; `frames()` is the one way to pull decoded frames out of it, sampled at a requested rate. A frame carries
the picture as decoded (`picture.py`): whoever reads it converts only what it needs, on its own thread, and
frames nobody analyses are never converted to RGB (`rgb_on_decode=True` converts each on the decoder thread, as
before issue 25).

Decoding runs outside the GIL: PyAV releases it around demuxing, `avcodec_send_packet` / `avcodec_receive_frame`
and swscale, and FFmpeg's own frame / slice threads (`DECODER_THREADING`) never hold it. What a decoder thread
does under the GIL per frame is the loop, the `Frame` record and its taps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av

from stream.live.sources import annexb
from stream.live.sources.audio import AudioBranch, AudioSink
from stream.live.sources.base import CodecInfo, Frame, Packet, SourceError, SourceState, StateMachine
from stream.live.sources.picture import Picture
from stream.config.sources import is_network
from stream.live.sources.urls import redact

# A file whose decoded frames stop this far short of the duration its header declares is reported truncated.
TRUNCATION_TOLERANCE_S = 1.0
# FFmpeg picks frame- or slice-threading as the codec allows; decoding is the heaviest per-frame CPU work.
DECODER_THREADING = "AUTO"
# Codecs whose packets are handed on for recording, and the filter that puts them in Annex B with the parameter
# sets in-band: packets then carry everything a muxer needs, so they can be written long after their container
# (and its extradata) is gone. Other codecs hand on no packets (the recorder encodes their frames instead).
ANNEXB_FILTERS = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}


class FrameSampler:
    """Keeps at most `fps` frames per second of stream time, on a fixed grid so the choice is repeatable."""

    def __init__(self, fps: float | None) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"sample rate must be positive, got {fps}")
        self.period = None if fps is None else 1.0 / fps
        self._next = -math.inf

    def accept(self, t: float) -> bool:
        if self.period is None:
            return True
        if t + 1e-6 < self._next:
            return False
        self._next = (math.floor(t / self.period + 1e-6) + 1) * self.period
        return True


class AVSource(StateMachine):
    """Decode one video address (path, rtsp://, device) with PyAV into RGB `Frame`s.

    `options` are FFmpeg demuxer options (e.g. rtsp_transport), `format` forces a demuxer (e.g. "v4l2").
    `strict_length` reports a file whose frames end well before its declared duration as truncated.
    `timeout` (seconds, or (open, read)) makes a stalled network read raise instead of hanging forever.
    `on_packet` receives every compressed video packet (H.264/HEVC only, in Annex B) before its frames are
    decoded, on the decoding thread: the recording ring's tap. `audio` (a live source) gets the first audio track's
    packets and decoded sound from the same demuxing loop (audio.py); without it the sound is not read.
    `rgb_on_decode` converts every emitted frame to RGB on the decoding thread (the old path, for comparisons);
    by default frames carry the decoded picture and are converted where they are read.
    """

    def __init__(
        self,
        url: str | Path,
        *,
        sample_fps: float | None = None,
        options: dict[str, str] | None = None,
        format: str | None = None,
        strict_length: bool = True,
        timeout: float | tuple[float, float] | None = None,
        on_packet: Callable[[Packet], None] | None = None,
        audio: AudioSink | None = None,
        rgb_on_decode: bool = False,
    ) -> None:
        self.url = str(url)
        self.name = redact(self.url)
        self.sample_fps = sample_fps
        self.options = dict(options or {})
        self.format = format
        self.timeout = timeout
        self.strict_length = strict_length and not is_network(self.url)
        self._init_state()
        self.frames_decoded = 0
        self.frames_emitted = 0
        self.width: int | None = None
        self.height: int | None = None
        self.rate: float | None = None
        self.on_packet = on_packet
        self.rgb_on_decode = rgb_on_decode
        self.audio = audio
        self.codec_info: CodecInfo | None = None
        self._container: av.container.InputContainer | None = None

    def _fail(self, message: str, exc: BaseException | None = None) -> SourceError:
        self._set_state(SourceState.FAILED, error=message)
        self.close()
        err = SourceError(message)
        err.__cause__ = exc
        return err

    def open(self) -> None:
        self._set_state(SourceState.CONNECTING)
        if not is_network(self.url) and self.format is None:
            path = Path(self.url)
            if not path.exists():
                raise self._fail(f"{self.name}: no such file")
            if path.is_file() and path.stat().st_size == 0:
                raise self._fail(f"{self.name}: empty file")
        try:
            container = av.open(self.url, mode="r", format=self.format, options=self.options, timeout=self.timeout)
        except (av.FFmpegError, OSError) as exc:
            raise self._fail(f"{self.name}: cannot open as video ({_reason(exc)})", exc) from exc
        if not container.streams.video:
            container.close()
            raise self._fail(f"{self.name}: contains no video stream")
        stream = container.streams.video[0]
        stream.thread_type = DECODER_THREADING
        self._container = container
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        self.rate = float(stream.average_rate) if stream.average_rate else None
        self.codec_info = CodecInfo(stream.codec_context.name, self.width, self.height,
                                    stream.average_rate or None, stream.time_base)
        self._set_state(SourceState.STREAMING)

    def _declared_duration(self) -> float | None:
        c = self._container
        if c is None or c.duration is None:
            return None
        return c.duration / av.time_base

    def frames(self) -> Iterator[Frame]:
        """Yield sampled frames until the source ends. Raises SourceError on open or decode failure."""
        if self._container is None:
            self.open()
        assert self._container is not None
        stream = self._container.streams.video[0]
        sampler = FrameSampler(self.sample_fps)
        last_time = None
        try:
            for vf in self._decoded(stream):
                index = self.frames_decoded
                self.frames_decoded += 1
                t = float(vf.time) if vf.time is not None else index / (self.rate or 1.0)
                last_time = t
                if not sampler.accept(t):
                    continue
                picture = Picture(video=vf)
                if self.rgb_on_decode:
                    picture = Picture(rgb=vf.to_ndarray(format="rgb24"))
                self.frames_emitted += 1
                yield Frame(picture, pts=vf.pts, time=t, index=index, received=time.monotonic())
        except av.FFmpegError as exc:
            raise self._fail(
                f"{self.name}: decoding failed after {self.frames_decoded} frames ({_reason(exc)})", exc
            ) from exc
        if self.frames_decoded == 0:
            raise self._fail(f"{self.name}: no frame could be decoded")
        declared = self._declared_duration()
        if self.strict_length and declared and last_time is not None:
            frame_span = 1.0 / self.rate if self.rate else 0.0
            if last_time + frame_span < declared - TRUNCATION_TOLERANCE_S:
                raise self._fail(
                    f"{self.name}: truncated: frames stop at {last_time:.1f} s "
                    f"but the file declares {declared:.1f} s"
                )
        self._set_state(SourceState.ENDED)
        self.close()

    def _decoded(self, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
        """The stream's frames, demuxed packet by packet so each packet can be handed to `on_packet` first."""
        info = self.codec_info
        tap = self.on_packet if info is not None and info.codec in ANNEXB_FILTERS else None
        bsf = None
        if tap:
            from av.bitstream import BitStreamFilterContext  # only when tapped: gpu_check's stand-in `av` lacks it

            bsf = BitStreamFilterContext(ANNEXB_FILTERS[info.codec], in_stream=stream)
        extradata = bytes(stream.codec_context.extradata or b"")
        in_band = extradata if annexb.is_annexb(extradata) else b""  # avcC/hvcC: the filter inserts them itself
        assert self._container is not None
        audio = AudioBranch.open(self._container, self.audio)
        for packet in self._container.demux(*((stream, audio.stream) if audio is not None else (stream,))):
            if audio is not None and packet.stream.index == audio.index:
                audio.take(packet)
                continue
            frames = packet.decode()
            if bsf is not None and info is not None and packet.size:
                for out in bsf.filter(packet):
                    if out.pts is None and out.dts is None:
                        continue  # cannot be placed in time (FFmpeg's RTSP gives a connection's first packet none)
                    data, key = bytes(out), bool(out.is_keyframe)
                    if key:
                        types = annexb.nal_types(data, info.codec)
                        key = annexb.random_access(types, info.codec)
                        if key and in_band and not annexb.has_parameter_sets(types, info.codec):
                            data = in_band + data
                    tap(Packet(data, out.pts, out.dts, int(out.duration or 0), key, info))
            yield from frames

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self.state in (SourceState.STREAMING, SourceState.CONNECTING):
            self._set_state(SourceState.STOPPED)

    def __enter__(self) -> "AVSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words without the file name PyAV appends (it may hold credentials)."""
    strerror = getattr(exc, "strerror", None)
    return strerror or type(exc).__name__
