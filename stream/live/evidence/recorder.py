"""An alert's evidence, as a subscriber of the bus: its face snapshot and strip, and its full-frame recording from
a recording ring per stream.

Each stream gets a `StreamTap`: its source's compressed packets (or, for webcams and other codecs, its frames
through `encoder.FrameEncoder`) go into a `PacketRing`, and its overlays into a short overlay ring. When an alert
starts (`on_alert`), its face crops are written (store.py) and its `Recording` takes the ring's packets from the
keyframe at or before `pre_capture_s` ahead of the first frame judged fake, then follows the stream until
`post_capture_s` after the alert closes (`on_closing`; or the stream stops), at most `max_clip_s` in all,
remuxing (never re-encoding) into a faststart MP4. The overlay track, the optional burn-in copy and the manifest
are written when it completes, all on the evidence thread, and the recorder answers on the bus with the custody
(`Custody`), which the alert lifecycle sends in the alert's `end` (or an `update`, if the alert is still open).

Times: every packet, overlay and alert time is put on the stream's continuous clock (`timeline.py`), so an alert
that spans a file's loop, a reconnect or a camera's timestamp jump is one recording; its breaks go in the
manifest (`discontinuities`).

Threads: packets arrive on each source's decoder thread, bus records on their publishers' threads; all are handed
to the evidence thread (the store's worker.py), which owns every open container, so no lock is held while
writing. A closed alert whose stream sends no more packets (a stalled camera) is completed by a task the evidence
thread runs `post_capture_s + STALL_SLACK_S` later: no timer thread per alert. The recorder's lock guards only
its tables, and is never held while publishing.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.config.evidence import EvidencePolicy
from stream.live.evidence import overlay_track
from stream.live.evidence.audio_tap import AudioTap
from stream.live.evidence.encoder import FrameEncoder
from stream.live.evidence.manifest import MANIFEST, write_manifest
from stream.live.evidence.mp4 import RemuxWriter
from stream.live.evidence.names import BURNED, RECORDING, VOICE_SOUND, VOICE_WINDOWS
from stream.live.evidence.ring import PacketRing
from stream.live.evidence.store import SNAPSHOT, STRIP, EvidenceStore
from stream.live.evidence.timeline import Timeline
from stream.live.evidence.voice_windows import write_voice_windows
from stream.live.sources import Frame, Packet
from stream.live.sources.live import StreamSource
from stream.messages import Alert, AlertClosing, Custody, Overlay

log = logging.getLogger(__name__)

# The ring keeps this much more than pre_capture_s: the frame judged fake was analysed a little after its
# packet arrived (decode + queue + inference), and the pre-roll is counted back from that frame's time.
RING_SLACK_S = 2.0
# An ended alert whose stream sends no more packets (a stalled camera) is completed after its post-roll plus
# this much wall-clock time, so its end message is never held back for long.
STALL_SLACK_S = 2.0
FRAMES_BEFORE_ENCODING = 2  # frames with no packet before a packet source is recorded by encoding its frames

OnComplete = Callable[[dict[str, Any]], None]
Publish = Callable[[Any], None]  # a record to the bus (MessageBus.publish)


class StreamTap:
    """One stream's recording ring, fed from its source's taps, on the stream's continuous clock (timeline.py):
    packets are rebased as they arrive, and overlays are kept with their time on that clock; and its sound's ring
    (audio_tap.py), on the same clock."""

    def __init__(self, source: StreamSource, policy: EvidencePolicy) -> None:
        self.name = source.name
        self.url = source.url
        self.keep_s = policy.pre_capture_s + RING_SLACK_S
        self.ring = PacketRing(self.keep_s, policy.ring_max_bytes)
        self.timeline = Timeline()
        self.overlays: deque[tuple[float, Overlay]] = deque()  # (continuous time, overlay)
        self.encoder: FrameEncoder | None = None
        self._packets = self._frames = 0
        self._lock = threading.Lock()
        self._unsubscribe = [source.subscribe_packets(self._on_packet), source.subscribe(self._on_frame),
                             source.report_ring(self.status)]
        self._wants_packets = source.has_packets
        self.audio = AudioTap(source, self.keep_s, policy.ring_max_bytes, self.timeline)

    def _on_packet(self, packet: Packet) -> None:
        self._packets += 1
        if self.encoder is None:
            self.ring.push(self.timeline.rebase(packet, time.monotonic()))

    def _on_frame(self, frame: Frame) -> None:
        self._frames += 1
        if self.encoder is None and (not self._wants_packets or
                                     (self._packets == 0 and self._frames >= FRAMES_BEFORE_ENCODING)):
            self.encoder = FrameEncoder(self.name, self.ring.push)
        if self.encoder is not None:
            self.encoder.submit(frame)

    def add_overlay(self, overlay: Overlay) -> float:
        """Keep `overlay` for the pre-roll of recordings to come; returns its time on the continuous clock."""
        at = self.timeline.continuous(overlay.time)
        with self._lock:
            self.overlays.append((at, overlay))
            while self.overlays and self.overlays[0][0] < at - self.keep_s:
                self.overlays.popleft()
        return at

    def overlays_since(self, t: float) -> list[tuple[float, Overlay]]:
        with self._lock:
            return [(at, o) for at, o in self.overlays if at >= t]

    def status(self) -> dict[str, Any]:
        mode = "encode" if self.encoder is not None else "remux" if self._packets else None
        extra = {"encoder_dropped": self.encoder.dropped} if self.encoder is not None else {}
        audio = self.audio.status()
        return {**self.ring.status(), "mode": mode, **extra, **({"audio": audio} if audio else {})}

    def close(self) -> None:
        for fn in self._unsubscribe:
            fn()
        if self.encoder is not None:
            self.encoder.close()
        self.audio.close()


class Recording:
    """One alert's recording. Every method but the constructor runs on the evidence thread."""

    def __init__(self, alert_id: str, tap: StreamTap, folder: Path, first_fake: float, track: int,
                 policy: EvidencePolicy, provenance: dict[str, Any], on_complete: OnComplete) -> None:
        self.id = alert_id
        self.tap = tap
        self.folder = folder
        self.first_fake = first_fake
        self.track = track
        self.policy = policy
        self.provenance = provenance
        self.on_complete = on_complete
        self.stop_at = first_fake - policy.pre_capture_s + policy.max_clip_s  # moved to the start once known
        self.writer: RemuxWriter | None = None
        self.frames: list[dict[str, Any]] = []
        self.done = False
        self.ended = False
        self.cut: str | None = None  # why the recording stopped early, if it did
        self.unfollow: Callable[[], None] = lambda: None
        self.unfollow_audio: Callable[[], None] = lambda: None
        # Packets and overlays that reach the evidence thread before `begin`: the ring hands new packets on from
        # the moment the recording follows it, which is before `begin` (with the held ones) is queued.
        self._early: list[Packet | tuple[float, Overlay]] | None = []

    def begin(self, held: list[Packet], overlays: list[tuple[float, Overlay]], held_audio: list[Packet] = ()) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        early, self._early = self._early or [], None
        for packet in [*held, *held_audio]:  # the video first: its first keyframe opens the file and its clock
            self.write(packet)
        for at, overlay in overlays:
            self.add_overlay(overlay, at)
        for item in early:
            self.write(item) if isinstance(item, Packet) else self.add_overlay(item[1], item[0])

    def write(self, packet: Packet) -> None:
        if self._early is not None:
            self._early.append(packet)
            return
        if self.done:
            return
        if packet.is_audio:
            if self.writer is not None and packet.time < self.stop_at:
                self.writer.write_audio(packet)
            return
        if self.writer is None:
            if not packet.keyframe or packet.pts is None:
                return  # a recording starts decodable, at a known time
            self.writer = RemuxWriter(self.folder / RECORDING, packet.codec, packet, audio=self.tap.audio.codec)
            self.stop_at = min(self.stop_at, packet.time + self.policy.max_clip_s)
        if packet.time >= self.stop_at:
            self.complete("max_clip_s" if not self.ended else None)
            return
        self.writer.write(packet)

    def add_overlay(self, overlay: Overlay, at: float) -> None:
        """`at`: the overlay's time on the stream's continuous clock (StreamTap.add_overlay)."""
        if self._early is not None:
            self._early.append((at, overlay))
            return
        if not self.done and self.writer is not None and self.writer.start_time <= at < self.stop_at:
            self.frames.append(overlay_track.entry(overlay, self.writer.start_time, at))

    def end(self, last_seen: float | None) -> None:
        """The alert ended with its last analysed frame at `last_seen` (continuous time): record the post-roll."""
        self.ended = True
        if last_seen is not None:
            self.stop_at = min(self.stop_at, last_seen + self.policy.post_capture_s)

    def complete(self, cut: str | None = None) -> None:
        """Close the MP4, write the overlay track (and burn-in copy) and the manifest, and report. Idempotent."""
        if self.done:
            return
        self.done, self.cut = True, cut
        self.unfollow()
        self.unfollow_audio()
        names = [SNAPSHOT, STRIP, VOICE_WINDOWS, VOICE_SOUND]  # those written (a face's or a voice's) are hashed
        header: dict[str, Any] = {"alert": self.id, "stream": self.tap.name, "track": self.track}
        if self.writer is not None:
            self.writer.close()
            origin = self.writer.start_time
            breaks = self.tap.timeline.breaks(origin, self.writer.last_time)
            header.update(clip_start_source_time=origin, first_fake=round(self.first_fake - origin, 4),
                          duration=round(self.writer.last_time - origin, 4), width=self.writer.codec.width,
                          height=self.writer.codec.height,
                          fps=float(self.writer.codec.rate) if self.writer.codec.rate else None,
                          discontinuities=[{"t": round(b.at - origin, 4), "reason": b.reason,
                                            "wall_gap_s": b.wall_gap_s} for b in breaks],
                          audio=self.writer.audio.summary() if self.writer.audio is not None else None)
            overlay_track.write(self.folder / overlay_track.OVERLAY, header, self.frames)
            names += [RECORDING, overlay_track.OVERLAY]
            if self.policy.burn_in:
                from stream.live.evidence.burn_in import burn_in

                burn_in(self.folder / RECORDING, self.frames, self.folder / BURNED)
                names.append(BURNED)
        record = {**self.provenance, "alert": self.id, "stream": self.tap.name, "source": self.tap.url,
                  "recording": {k: v for k, v in header.items() if k not in ("alert", "stream")},
                  "remuxed": bool(self.writer is not None and self.tap.encoder is None),
                  "cut": cut, "written_at": time.time()}
        custody = write_manifest(self.folder, record, names)
        self.on_complete(custody)


class Recorder:
    """Subscribes to alerts (`on_alert`, `on_closing`) and overlays (`on_overlay`); answers with `Custody`."""

    def __init__(self, store: EvidenceStore, provenance: dict[str, Any] | None = None,
                 publish: Publish = lambda record: None) -> None:
        self.store = store
        self.policy = store.policy
        self.provenance = provenance or {}
        self.publish = publish
        self._taps: dict[str, StreamTap] = {}
        self._open: dict[str, Recording] = {}
        self._closed = False
        self._lock = threading.Lock()

    # --- streams -------------------------------------------------------------------------------------------
    def attach(self, source: StreamSource) -> None:
        if self.policy.record:
            with self._lock:
                self._taps[source.name] = StreamTap(source, self.policy)

    def ring(self, name: str) -> PacketRing | None:
        tap = self._taps.get(name)
        return tap.ring if tap is not None else None

    def detach(self, name: str) -> None:
        """The stream is gone: complete its recordings with what they have."""
        with self._lock:
            tap = self._taps.pop(name, None)
            recs = [r for r in self._open.values() if r.tap is tap]
        if tap is not None:
            tap.close()
        for rec in recs:
            self.store.submit(rec.complete, None if rec.ended else "stream removed")

    # --- the bus's records ---------------------------------------------------------------------------------
    def on_overlay(self, overlay: Overlay) -> None:
        """Overlays feed the stream's overlay ring and its open recordings' overlay tracks."""
        tap = self._taps.get(overlay.stream)
        if tap is None:
            return
        at = tap.add_overlay(overlay)
        with self._lock:
            recs = [r for r in self._open.values() if r.tap is tap]
        for rec in recs:
            self.store.submit(rec.add_overlay, overlay, at)

    def on_alert(self, alert: Alert) -> None:
        """A `start`: write its face crops, and begin its recording if the lifecycle named one. A stream with no
        ring is answered at once: no recording (`Custody` with none)."""
        if alert.event != "start":
            return
        recording = alert.evidence.get("recording_state") == "recording"
        if recording:
            self.store.protect(alert.id)  # before its first write: retention never takes an open alert's folder
        if alert.faces is not None:
            snapshot, strip = alert.faces
            self.store.save(alert.id, snapshot, strip)
        if alert.sound is not None:  # a voice alert: the windows it was raised on
            self.store.submit(write_voice_windows, self.store.folder(alert.id), alert.sound)
        if not recording:
            return
        answer = functools.partial(self._answer, alert.id)
        if alert.at is None or self.start(alert.id, alert.stream, alert.track, alert.at, answer) is None:
            self.store.release(alert.id)
            self.publish(Custody(alert.id, "none"))

    def _answer(self, alert_id: str, custody: dict[str, Any]) -> None:
        """The recording is complete (evidence thread): the custody goes back on the bus."""
        self.publish(Custody(alert_id, _state(custody), custody))

    def on_closing(self, closing: AlertClosing) -> None:
        self.end(closing.alert_id, closing.at)

    # --- recordings ----------------------------------------------------------------------------------------
    def start(self, alert_id: str, stream: str, track: int, first_fake: float,
              on_complete: OnComplete) -> dict[str, str] | None:
        """Begin the recording of an alert whose first frame judged fake is at `first_fake` (source time).
        Returns the paths it will write, or None when the stream has no ring."""
        tap = self._taps.get(stream)
        if tap is None:
            return None
        folder = self.store.folder(alert_id)
        first_fake = tap.timeline.continuous(first_fake)  # the frame's source time, on the recording's clock

        def completed(custody: dict[str, Any]) -> None:
            with self._lock:
                self._open.pop(alert_id, None)
            self.store.release(alert_id)
            try:
                on_complete(custody)
            finally:
                self.store.enforce_retention()

        rec = Recording(alert_id, tap, folder, first_fake, track, self.policy, self.provenance, completed)
        self.store.protect(alert_id)
        with self._lock:
            self._open[alert_id] = rec
        since = first_fake - self.policy.pre_capture_s
        held, rec.unfollow = tap.ring.follow(since, lambda p: self.store.submit(rec.write, p),
                                             lambda: self.store.submit(rec.complete, "source changed"))
        held_audio, rec.unfollow_audio = tap.audio.ring.follow(  # from the clip's first picture; a new codec: silent
            held[0].time if held else since, lambda p: self.store.submit(rec.write, p), lambda: None)
        self.store.submit(rec.begin, held, tap.overlays_since(since), held_audio)
        return {"recording": str(folder / RECORDING), "overlay": str(folder / overlay_track.OVERLAY),
                "manifest": str(folder / MANIFEST)}

    def end(self, alert_id: str, last_seen: float | None) -> None:
        """The alert closed: record its post-roll, then complete (a stalled stream: on the evidence thread's
        timetable, `post_capture_s + STALL_SLACK_S` from now)."""
        with self._lock:
            rec = self._open.get(alert_id)
            gone = rec is not None and rec.tap.name not in self._taps
        if rec is None:
            return
        self.store.submit(rec.end, None if last_seen is None else rec.tap.timeline.continuous(last_seen))
        if gone:  # the stream is already gone
            self.store.submit(rec.complete)
            return
        self.store.later(self.policy.post_capture_s + STALL_SLACK_S, self._stalled, rec)

    def _stalled(self, rec: Recording) -> None:
        """On the evidence thread: complete a closed alert's recording that no packet completed in time."""
        with self._lock:
            if rec.id not in self._open or self._closed:
                return
        rec.complete("stream stalled")

    def open_ids(self) -> set[str]:
        with self._lock:
            return set(self._open)

    def close(self) -> None:
        """Complete every open recording now (the server is stopping), then stop the taps."""
        with self._lock:
            recs, taps = list(self._open.values()), list(self._taps.values())
            self._taps.clear()
            self._closed = True
        for rec in recs:
            self.store.submit(rec.complete, None if rec.ended else "server stopped")
        for tap in taps:
            tap.close()
        self.store.flush()


def _state(custody: dict[str, Any]) -> str:
    """What the alert's evidence says once its recording is done: "complete" when it holds a recording."""
    return "complete" if RECORDING in custody.get("files", {}) else "none"
