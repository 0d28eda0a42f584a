"""One continuous clock per stream for its recordings, across a file's loops, reconnects and cameras that restart
their timestamps.

A source's clock is its own: every connection (a file's loop, a camera's reconnect) starts again near 0, and a
camera may jump its timestamps without reconnecting. A recording that spans such a moment needs one rising clock,
or the MP4 index breaks and the alert's pre-roll is lost. `Timeline.rebase` moves each packet onto that clock:
within a segment (one stretch of the source's clock) by a fixed offset, so the bitstream and its frame spacing
are untouched; a new segment starts just after the end of the last one. A new connection whose codec, width and
height are those of the last keeps its codec record, so the recording ring and an open recording go on through
it; another stream shape is a new record (the ring resets, as before).

Frames, overlays and alerts carry the source's own times (the relay and the page need those); `continuous(t)`
maps one onto this clock through the segment that holds it, newest first, which is unambiguous for the recent
times the recorder asks about. Each break is kept (`breaks`) so a recording's manifest says where it is.

Threads: `rebase` on the source's decoding thread; `continuous` and `breaks` from any thread.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

from stream.live.sources import CodecInfo, Packet

# Policy: a step back of more than BACK_JUMP_S within one connection is a restarted clock, not a reordered
# packet (those are dropped by the writer). Lower would split a stream with jittery timestamps into segments.
BACK_JUMP_S = 0.5
# Policy: media time running this far ahead of the wall clock between two packets is a jump, not a stall the
# camera is catching up from. Higher keeps a long hole in the recording (and can cut it at max_clip_s); lower
# could mistake a burst after a network stall for a jump. A file read faster than real time (pace off) advances
# one frame per packet, far below this.
AHEAD_JUMP_S = 5.0
SEGMENTS_KEPT = 8  # raw-time ranges kept for `continuous` (it is asked about the last seconds only)
BREAKS_KEPT = 64  # breaks kept for manifests (a recording spans max_clip_s; the oldest go first)
MATCH_SLACK_S = 0.5  # a time this close outside a segment's range still belongs to it


@dataclass(frozen=True, slots=True)
class Break:
    """Where the source's clock broke: `at` on the continuous clock (the first packet after it)."""

    at: float
    reason: str  # "new connection" (a file's loop, a reconnect), "timestamps went back", "timestamps jumped ahead"
    wall_gap_s: float  # wall-clock time between the packets either side


@dataclass(slots=True)
class _Segment:
    offset_s: float  # continuous = raw + offset_s
    first: float  # raw times (seconds) seen in this segment
    last: float


def same_shape(a: CodecInfo, b: CodecInfo) -> bool:
    """Whether one MP4 track can carry both (parameter sets travel in-band, so those may differ)."""
    return (a.codec, a.width, a.height) == (b.codec, b.width, b.height)


class Timeline:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._raw_codec: CodecInfo | None = None  # the connection's own record
        self._codec: CodecInfo | None = None  # the record packets are rebased onto (kept while shapes match)
        self._offset = 0  # ticks of self._codec.time_base added to this segment's (scaled) timestamps
        self._scale = Fraction(1)  # raw ticks -> self._codec ticks
        self._last_dts: Fraction | None = None  # continuous seconds of the last packet's decode time
        self._end: Fraction = Fraction(0)  # continuous seconds just after the latest frame shown
        self._last_arrived = 0.0
        self._segments: deque[_Segment] = deque(maxlen=SEGMENTS_KEPT)
        self._breaks: deque[Break] = deque(maxlen=BREAKS_KEPT)

    # -- the decoding thread -------------------------------------------------------------------------------------

    def rebase(self, packet: Packet, arrived: float) -> Packet:
        """`packet` on the continuous clock (and on the kept codec record); `arrived` is time.monotonic()."""
        with self._lock:
            new_connection = packet.codec is not self._raw_codec
            if new_connection:
                self._connect(packet.codec)
            codec = self._codec
            assert codec is not None
            raw = packet.dts if packet.dts is not None else packet.pts
            if raw is None:  # nothing to place it by: the ring and the writer skip it
                return dataclasses.replace(packet, codec=codec)
            reason = self._break(raw, new_connection, arrived)
            if reason is not None:
                self._restart(packet, raw, reason, arrived)
            elif not self._segments:
                self._segments.append(_Segment(0.0, _seconds(packet), _seconds(packet)))
            out = self._moved(packet, codec)
            self._note(packet, out, arrived)
            return out

    def _connect(self, raw_codec: CodecInfo) -> None:
        self._raw_codec = raw_codec
        if self._codec is None or not same_shape(self._codec, raw_codec):
            self._codec = raw_codec  # another shape: a new record, and a new track wherever it is recorded
        self._scale = Fraction(raw_codec.time_base) / Fraction(self._codec.time_base)

    def _break(self, raw: int, new_connection: bool, arrived: float) -> str | None:
        if self._last_dts is None:
            return None
        if new_connection:
            return "new connection"
        assert self._codec is not None
        step = (self._ticks(raw) + self._offset) * Fraction(self._codec.time_base) - self._last_dts
        if step < -BACK_JUMP_S:
            return "timestamps went back"
        if step > (arrived - self._last_arrived) + AHEAD_JUMP_S:
            return "timestamps jumped ahead"
        return None

    def _restart(self, packet: Packet, raw: int, reason: str, arrived: float) -> None:
        """A new segment: its first frame just after the last one shown, its first decode time after the last."""
        assert self._codec is not None and self._last_dts is not None
        tb = Fraction(self._codec.time_base)
        first_pts = self._ticks(packet.pts if packet.pts is not None else raw)
        self._offset = max(math.ceil(self._end / tb) - first_pts,
                           math.floor(self._last_dts / tb) + 1 - self._ticks(raw))
        at = float((first_pts + self._offset) * tb)
        self._breaks.append(Break(at, reason, round(arrived - self._last_arrived, 3)))
        raw_s = _seconds(packet)
        self._segments.append(_Segment(at - raw_s, raw_s, raw_s))

    def _ticks(self, raw: int) -> int:
        return raw if self._scale == 1 else round(raw * self._scale)

    def _moved(self, packet: Packet, codec: CodecInfo) -> Packet:
        def move(ts: int | None) -> int | None:
            return None if ts is None else self._ticks(ts) + self._offset

        return dataclasses.replace(packet, pts=move(packet.pts), dts=move(packet.dts), codec=codec,
                                   duration=self._ticks(packet.duration))

    def _note(self, packet: Packet, out: Packet, arrived: float) -> None:
        tb = Fraction(out.codec.time_base)
        dts = out.dts if out.dts is not None else out.pts
        assert dts is not None
        self._last_dts = dts * tb
        self._last_arrived = arrived
        if out.pts is not None:
            shown = out.duration * tb if out.duration > 0 else _frame_s(out.codec)
            self._end = max(self._end, out.pts * tb + shown)
            raw_s = _seconds(packet)
            segment = self._segments[-1]
            segment.first, segment.last = min(segment.first, raw_s), max(segment.last, raw_s)

    # -- any thread ----------------------------------------------------------------------------------------------

    def continuous(self, t: float) -> float:
        """A source time (a frame's, an overlay's, an alert's) on the continuous clock: through the newest segment
        whose range holds it, else the newest one."""
        with self._lock:
            for segment in reversed(self._segments):
                if segment.first - MATCH_SLACK_S <= t <= segment.last + MATCH_SLACK_S:
                    return t + segment.offset_s
            return t + self._segments[-1].offset_s if self._segments else t

    def breaks(self, start: float, end: float) -> list[Break]:
        """The breaks with `start < at <= end` (continuous seconds)."""
        with self._lock:
            return [b for b in self._breaks if start < b.at <= end]


def _seconds(packet: Packet) -> float:
    ts = packet.pts if packet.pts is not None else packet.dts
    return float((ts or 0) * packet.codec.time_base)


def _frame_s(codec: CodecInfo) -> Fraction:
    """One frame's time when a packet does not say (no duration): from the rate, else one tick."""
    return 1 / Fraction(codec.rate) if codec.rate else Fraction(codec.time_base)
