"""The sound of an alert's recording: the stream's audio packets remuxed into the recording's MP4 beside the video,
on the video's clock (the first video packet is the clip's 0, so sound from before it is left out).

One track per recording: its codec is the one the stream's audio ring held when the recording began; packets of
another connection's codec (a reconnect changed the sound) are left out, so the rest of that clip is silent rather
than wrong.
"""

from __future__ import annotations

from typing import Any

import av

from stream.live.sources import AudioCodecInfo, Packet


class AudioTrack:
    def __init__(self, out: Any, info: AudioCodecInfo, start_time: float) -> None:
        self.info = info
        self.stream = out.add_stream_from_template(info.template)
        self.stream.time_base = info.time_base
        self.origin = int(round(start_time / info.time_base))  # the clip's 0 in the audio's own ticks
        self.packets = 0
        self.first: float | None = None  # source times of the first and last sound written
        self.last: float | None = None
        self._out = out
        self._last_dts: int | None = None

    def write(self, packet: Packet) -> None:
        if packet.codec is not self.info or packet.pts is None:
            return
        pts = packet.pts - self.origin
        dts = (packet.dts if packet.dts is not None else packet.pts) - self.origin
        if pts < 0 or (self._last_dts is not None and dts <= self._last_dts):
            return  # before the clip's first picture, or repeated
        p = av.Packet(packet.data)
        p.pts, p.dts, p.duration = pts, dts, packet.duration
        p.time_base = self.info.time_base
        p.stream = self.stream
        self._out.mux(p)
        self._last_dts = dts
        self.packets += 1
        end = packet.time + float(packet.duration * self.info.time_base)
        self.first = packet.time if self.first is None else self.first
        self.last = end if self.last is None else max(self.last, end)

    def summary(self) -> dict[str, Any]:
        """What the recording's overlay track and manifest say of its sound."""
        return {"codec": self.info.codec, "rate": self.info.rate, "channels": self.info.channels,
                "packets": self.packets,
                "seconds": round(self.last - self.first, 3) if self.first is not None and self.last else 0.0}
