"""A per-stream ring of the source's compressed packets: the last seconds of video, ready to be remuxed.

The ring is cut at keyframes: it drops whole GOPs from the front, keeping the keyframe at or before the oldest
moment it must still cover (`keep_s` before the newest packet), so a recording taken from it always starts
decodable. Memory is capped in bytes: over the cap, the oldest GOP goes even if the ring then covers less than
`keep_s`; a single GOP larger than the cap empties the ring until the next keyframe. The trade-off is explicit:
a camera whose GOP exceeds `max_bytes` gets no pre-roll rather than unbounded memory.

Consumers (open recordings) attach with `follow`, which hands them the held packets from a given time and then
every new packet, under one lock, so none is missed or seen twice.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from stream.live.sources import CodecInfo, Packet

Consumer = Callable[[Packet], None]


class PacketRing:
    def __init__(self, keep_s: float, max_bytes: int) -> None:
        self.keep_s = keep_s
        self.max_bytes = max_bytes
        self._gops: deque[list[Packet]] = deque()
        self._gop_bytes: deque[int] = deque()
        self.bytes = 0
        self.codec: CodecInfo | None = None
        self.overflows = 0  # times one GOP alone exceeded the cap
        self.resets = 0  # times the codec changed (a reconnect, a file's loop)
        self.newest: float | None = None  # the latest packet's time (source clock)
        self._consumers: list[tuple[Consumer, Callable[[], None]]] = []
        self._lock = threading.Lock()

    def push(self, packet: Packet) -> None:
        with self._lock:
            if packet.codec is not self.codec:
                self._clear()
                if self.codec is not None:
                    self.resets += 1
                    for _, on_reset in self._consumers:
                        on_reset()
                    self._consumers = []
                self.codec = packet.codec
            for fn, _ in self._consumers:
                fn(packet)
            self.newest = packet.time
            if packet.keyframe and packet.pts is not None:
                self._gops.append([packet])
                self._gop_bytes.append(packet.size)
            elif self._gops:
                self._gops[-1].append(packet)
                self._gop_bytes[-1] += packet.size
            else:
                return  # no keyframe yet: nothing decodable to hold
            self.bytes += packet.size
            self._evict(packet.time)

    def _evict(self, newest: float) -> None:
        oldest_needed = newest - self.keep_s
        while len(self._gops) > 1 and (self._gops[1][0].time <= oldest_needed or self.bytes > self.max_bytes):
            self._drop_oldest()
        if self.bytes > self.max_bytes:  # one GOP alone is over the cap
            self.overflows += 1
            self._clear()

    def _drop_oldest(self) -> None:
        self._gops.popleft()
        self.bytes -= self._gop_bytes.popleft()

    def _clear(self) -> None:
        self._gops.clear()
        self._gop_bytes.clear()
        self.bytes = 0

    def packets_since(self, t: float) -> list[Packet]:
        """The held packets from the last keyframe at or before `t` (or the oldest held, if none is that old)."""
        with self._lock:
            return self._since(t)

    def _since(self, t: float) -> list[Packet]:
        gops = list(self._gops)
        start = 0
        for i, gop in enumerate(gops):
            if gop[0].time <= t:
                start = i
        return [p for gop in gops[start:] for p in gop]

    def follow(self, t: float, fn: Consumer, on_reset: Callable[[], None]) -> tuple[list[Packet], Callable[[], None]]:
        """Held packets from `t` (as `packets_since`), then `fn(packet)` for every new one on the pushing thread;
        `on_reset()` once if the codec changes (the consumer is then dropped). Returns (held, unfollow)."""
        entry = (fn, on_reset)
        with self._lock:
            held = self._since(t)
            self._consumers = [*self._consumers, entry]

        def unfollow() -> None:
            with self._lock:
                self._consumers = [e for e in self._consumers if e is not entry]

        return held, unfollow

    def status(self) -> dict[str, Any]:
        """What status messages report: memory held, seconds covered, packets, and the cap's events."""
        with self._lock:
            first = self._gops[0][0].time if self._gops else None
            last = self._gops[-1][-1].time if self._gops else None
            return {"bytes": self.bytes, "max_bytes": self.max_bytes, "packets": sum(len(g) for g in self._gops),
                    "seconds": round(last - first, 2) if first is not None and last is not None else 0.0,
                    "gops": len(self._gops), "overflows": self.overflows,
                    "codec": self.codec.codec if self.codec else None}
