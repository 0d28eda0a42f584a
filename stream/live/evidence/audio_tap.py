"""One stream's sound for its recordings: a ring of audio packets beside the video's, so an alert's recording keeps
what was heard, pre-roll included.

Where the packets come from: a file's or camera's own audio packets, remuxed unchanged, when MP4 can hold their
codec (AAC, MP3, Opus...); otherwise (a browser's sound, which aiortc decodes; a camera's G.711) the decoded sound,
encoded to AAC (audio_encoder.py), from the first chunk on. Every audio packet is a random-access point, so the
ring (`PacketRing`) holds them one by one and a recording may start at any of them.

Clock: packets go into the ring on the stream's continuous clock (the video's `Timeline`, timeline.py), shifted by
the offset of the video segment that holds their time, so a recording across a file's loop or a reconnect keeps
its sound in step with its pictures. A new connection whose sound has the same codec, rate and channels keeps the
held codec record (as the video's does), so the ring and an open recording go on through it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from stream.live.evidence.audio_encoder import AudioEncoder
from stream.live.evidence.ring import PacketRing
from stream.live.evidence.timeline import Timeline
from stream.live.sources import AudioChunk, AudioCodecInfo, Packet
from stream.live.sources.live import StreamSource


class AudioTap:
    def __init__(self, source: StreamSource, keep_s: float, max_bytes: int, timeline: Timeline) -> None:
        """`timeline`: the stream's video clock, which the sound is put on."""
        self.name = source.name
        self.ring = PacketRing(keep_s, max_bytes)
        self._timeline = timeline
        self.encoder: AudioEncoder | None = None
        self._source = source
        self._packets = 0
        self._unsubscribe = [source.subscribe_audio_packets(self._on_packet)]
        if not source.has_packets:  # sound arrives decoded, or not at all
            self._unsubscribe.append(source.subscribe_audio(self._on_chunk))

    @property
    def codec(self) -> AudioCodecInfo | None:
        """The codec of the sound held now (what a recording starting now gives its audio track); None: silent."""
        codec = self.ring.codec
        return codec if isinstance(codec, AudioCodecInfo) else None

    def _on_packet(self, packet: Packet) -> None:
        self._packets += 1
        if isinstance(packet.codec, AudioCodecInfo) and packet.codec.template is not None:
            self._push(packet)
        elif self.encoder is None and len(self._unsubscribe) == 1:  # MP4 cannot hold it: encode what it decodes to
            self._unsubscribe.append(self._source.subscribe_audio(self._on_chunk))

    def _on_chunk(self, chunk: AudioChunk) -> None:
        if self.encoder is None:
            self.encoder = AudioEncoder(self.name, self._push)
        self.encoder.submit(chunk)

    def _push(self, packet: Packet) -> None:
        """Into the ring, on the continuous clock, under the held codec record where this one is the same."""
        held = self.ring.codec
        codec = held if held is not None and held is not packet.codec and held == packet.codec else packet.codec
        shift = self._timeline.continuous(packet.time) - packet.time
        ticks = round(shift / packet.codec.time_base) if shift else 0
        if ticks or codec is not packet.codec:
            packet = dataclasses.replace(packet, codec=codec,
                                         pts=None if packet.pts is None else packet.pts + ticks,
                                         dts=None if packet.dts is None else packet.dts + ticks)
        self.ring.push(packet)

    def status(self) -> dict[str, Any] | None:
        """What the stream's ring status says of its sound; None while it has none."""
        codec = self.codec
        if codec is None:
            return None
        mode = "encode" if self.encoder is not None else "remux"
        extra = {"encoder_dropped": self.encoder.dropped} if self.encoder is not None else {}
        held = self.ring.status()
        return {"codec": codec.codec, "rate": codec.rate, "channels": codec.channels, "seconds": held["seconds"],
                "bytes": held["bytes"], "mode": mode, **extra}

    def close(self) -> None:
        for fn in self._unsubscribe:
            fn()
        if self.encoder is not None:
            self.encoder.close()
