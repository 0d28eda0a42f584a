"""What every source shares: the decoded frame, the state machine and the error type."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import Any

import numpy as np

from stream.live.sources.picture import Picture

log = logging.getLogger(__name__)


class SourceState(str, Enum):
    """Life cycle of a source. Live sources move streaming <-> reconnecting; files end."""

    IDLE = "idle"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    STOPPED = "stopped"
    FAILED = "failed"


S = SourceState
# Every allowed change. A source is (re)started from any resting state; it streams, loses its input and
# reconnects, ends (files) or fails; anything may be stopped. Same-state "changes" are no-ops, never errors.
TRANSITIONS: dict[SourceState, frozenset[SourceState]] = {
    S.IDLE: frozenset({S.CONNECTING, S.FAILED, S.STOPPED}),
    S.CONNECTING: frozenset({S.STREAMING, S.RECONNECTING, S.ENDED, S.FAILED, S.STOPPED}),
    S.STREAMING: frozenset({S.CONNECTING, S.RECONNECTING, S.ENDED, S.FAILED, S.STOPPED}),  # CONNECTING: a loop
    S.RECONNECTING: frozenset({S.CONNECTING, S.STREAMING, S.ENDED, S.FAILED, S.STOPPED}),
    S.ENDED: frozenset({S.CONNECTING, S.STOPPED}),
    S.FAILED: frozenset({S.CONNECTING, S.STOPPED}),
    S.STOPPED: frozenset({S.CONNECTING}),
}
StateListener = Callable[[object, SourceState, SourceState], None]  # (source, old, new)
_UNSET = object()


class InvalidTransition(RuntimeError):
    """A source was asked to change state in a way the table forbids: a bug, never a user error."""


class StateMachine:
    """One `_set_state(new, error)` that checks `TRANSITIONS` and tells listeners, from whichever thread changes
    it (decoder threads, the event loop, the API).

    STOPPED wins races: a decoder thread that has not yet seen a stop may still try to report, say, streaming;
    such a late change is dropped (not an error), because the user's stop is the last word until a restart."""

    def _init_state(self) -> None:
        self._state = SourceState.IDLE
        self._state_lock = threading.Lock()
        self._state_listeners: list[StateListener] = []
        self.error: str | None = None

    @property
    def state(self) -> SourceState:
        return self._state

    def _set_state(self, new: SourceState, error: str | None | object = _UNSET) -> bool:
        """Change state (and the last error, when given). Returns whether the state changed."""
        with self._state_lock:
            old = self._state
            if error is not _UNSET:
                self.error = error  # type: ignore[assignment]
            if new is old:
                return False
            if old is SourceState.STOPPED and new is not SourceState.CONNECTING:
                return False
            if new not in TRANSITIONS[old]:
                raise InvalidTransition(f"{getattr(self, 'name', self)}: {old.value} -> {new.value} is not allowed")
            self._state = new
            listeners = list(self._state_listeners)
        for fn in listeners:
            try:
                fn(self, old, new)
            except Exception:  # a listener's bug must not break the source
                log.exception("state listener failed")
        return True

    def on_state(self, fn: StateListener) -> Callable[[], None]:
        """Call `fn(source, old, new)` after every change. Returns the function that unsubscribes."""
        self._state_listeners.append(fn)
        return lambda: self._state_listeners.remove(fn) if fn in self._state_listeners else None


class SourceError(RuntimeError):
    """A source could not be opened or decoded. The message is meant for the user and holds no credentials."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame.

    `picture` holds it as decoded, converted to RGB only when something reads it (`picture.py`); an RGB array
    given instead is wrapped. `image` is the full RGB frame (converted on first read: hot paths ask `picture`
    for only what they need). `time` is the presentation time in seconds from the stream's start (pts *
    time_base, or index / rate when the container gives no pts); `index` counts decoded frames, so gaps in it show
    what sampling skipped. `received` is the monotonic clock when it was decoded, for latency figures.
    """

    picture: Picture
    pts: int | None
    time: float
    index: int
    received: float

    def __post_init__(self) -> None:
        if isinstance(self.picture, np.ndarray):
            object.__setattr__(self, "picture", Picture(rgb=self.picture))

    @classmethod
    def of(cls, image: np.ndarray, pts: int | None, time: float, index: int, received: float) -> "Frame":
        """A frame of an RGB array."""
        return cls(Picture(rgb=image), pts, time, index, received)

    @property
    def image(self) -> np.ndarray:
        """The full RGB frame (height, width, 3)."""
        return self.picture.rgb()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.picture.size


@dataclass(frozen=True, slots=True)
class CodecInfo:
    """What a muxer needs to write a source's packets unchanged: one record per connection, so a reconnect (or
    a file's loop) that may change the stream is seen as a new object."""

    codec: str  # FFmpeg codec name, e.g. "h264"
    width: int
    height: int
    rate: Fraction | None  # average frame rate, when the container knows it
    time_base: Fraction


@dataclass(frozen=True, slots=True)
class AudioCodecInfo:
    """What a muxer needs to write a source's audio packets unchanged: one record per connection, like `CodecInfo`.

    `template` is a PyAV output stream holding the codec's parameters (its extradata: AAC's AudioSpecificConfig),
    made while the source's container was open, in an in-memory MP4 that is never written, so a recording made long
    after can copy them (`add_stream_from_template`). None when MP4 cannot hold the codec (G.711 from a camera):
    such packets only tell a recorder to encode the decoded sound instead."""

    codec: str  # FFmpeg codec name, e.g. "aac"
    rate: int  # samples per second
    channels: int
    time_base: Fraction
    template: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A run of decoded sound as the source delivered it (a PyAV `AudioFrame`: any format, rate and layout), for
    the voice path and for recorders that encode. `time` is where it starts, in seconds on the stream's clock (the
    clock of its `Frame.time`s, so sound and pictures line up); `received` the monotonic clock on arrival."""

    frame: Any  # av.AudioFrame (typed Any: this module imports no PyAV)
    time: float
    received: float

    @property
    def rate(self) -> int:
        return int(self.frame.sample_rate)

    @property
    def seconds(self) -> float:
        return self.frame.samples / self.rate


@dataclass(frozen=True, slots=True)
class Packet:
    """One compressed packet as the source sent it (H.264/HEVC in Annex B, parameter sets in-band; or audio, as
    demuxed), for the recording ring. `data` is a copy, so it outlives the container it came from."""

    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    keyframe: bool
    codec: CodecInfo | AudioCodecInfo

    @property
    def is_audio(self) -> bool:
        return isinstance(self.codec, AudioCodecInfo)

    @property
    def time(self) -> float:
        """Presentation time in seconds, on the same clock as the decoded `Frame.time`."""
        ts = self.pts if self.pts is not None else self.dts
        return float((ts or 0) * self.codec.time_base)

    @property
    def size(self) -> int:
        return len(self.data)
