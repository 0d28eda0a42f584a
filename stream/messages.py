"""The messages `serve` sends: overlay, status and alert, as frozen records with one schema version, one
lossy/durable classification and one serialiser.

Why records and not loose dicts: the scheduler, the sources, the WebRTC peers, the alert manager, the hub, the
buses and the alert readers all produce or consume these messages. With one definition a field is added,
renamed or documented in one place, and the wire format (`to_message()` -> a JSON-ready dict) cannot drift
between producers.

Classes of message:
- **lossy** (`overlay`, `status`): a newer one supersedes an older one, so dropping is better than delaying
  the pipeline or another client;
- **durable** (`alert`): every one must reach every subscriber once, in order.

Producers publish these records on the in-process bus (`stream.live.bus.dispatch.MessageBus`); the wire form
(`to_message()`, one dict per record, JSON by `dumps`) is made there once, for the subscribers at the edge
(websockets, the alert log, Redis, webhooks, MQTT). `WIRE` lists the records that ever leave the process;
`AlertClosing` and `Custody` are in-process only: they carry the evidence recorder's part of an alert's life.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from typing import Any, Literal

VERSION = 1  # the schema version every message carries as "v"
OVERLAY, STATUS, ALERT = "overlay", "status", "alert"
LOSSY_TYPES = frozenset({OVERLAY, STATUS})
DURABLE_TYPES = frozenset({ALERT})
AlertEvent = Literal["start", "update", "end"]
Modality = Literal["face", "voice"]
Message = dict[str, Any]
# The track id a stream's voice goes by: its alerts carry it as `track` (face track ids count up from 0, so a reader
# keyed by (stream, track) keeps a voice alert apart from every face's), beside `modality: "voice"`.
VOICE_TRACK = -1


def is_lossy(msg: Message) -> bool:
    return msg.get("type") in LOSSY_TYPES


def is_alert(msg: Message) -> bool:
    return msg.get("type") == ALERT


def dumps(msg: Message) -> str:
    """Compact JSON on one line: the wire format (websocket, Redis) and the file format (alert log, spool)."""
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False)


def _rounded_box(box) -> list[float]:
    return [round(float(v), 1) for v in box]


@dataclass(frozen=True, slots=True)
class FaceOverlay:
    """One tracked face on one analysed frame.

    `score` is the smoothed, fused p(fake), `raw` this frame's fused p(fake), `engines` each engine's own
    p(fake), `verdict` the track's hysteresis verdict, or "low-quality" (with `reason`) when the face is below
    every engine's quality floor: such a face never counts toward the verdict or an alert."""

    track: int  # the face's track id within its stream, never reused
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in full-frame pixels
    prob: float  # MTCNN's face probability
    score: float | None  # the smoothed, fused p(fake); null until scored
    raw: float | None  # this frame's fused p(fake), before smoothing
    engines: dict[str, float]  # engine name -> its own p(fake) on this frame
    verdict: str  # the track's verdict: real, uncertain, fake or low-quality
    quality: dict[str, Any] = field(default_factory=dict)  # face_px, sharpness (+ the link's, for WebRTC)
    reason: str | None = None  # why the verdict is "low-quality"

    def to_message(self) -> Message:
        return {"track": self.track, "box": _rounded_box(self.box), "prob": round(float(self.prob), 4),
                "score": self.score, "raw": self.raw, "engines": dict(self.engines), "verdict": self.verdict,
                "quality": dict(self.quality), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class VoiceOverlay:
    """A stream's voice as it stands when an overlay is sent: its latest window's scores, the rolling voice verdict,
    and the sound level now. Present on every overlay of a stream that has sound (and voice engines to judge it).

    `verdict` is the voice's hysteresis verdict, or "low-quality" with `reason` while the latest window held too
    little speech to judge (silence, music) or no window was full yet: such a window never counts toward the
    verdict or an alert, as a low-quality face does not."""

    track: int  # the voice's reserved track id (VOICE_TRACK, -1), as its alerts carry it
    p_fake: float | None  # the latest window's fused p(fake); null when that window was not judged
    engines: dict[str, float]  # voice engine name -> its p(fake) on the latest window (empty when not judged)
    score: float | None  # the smoothed voice p(fake) the verdict is decided on; null until a window was judged
    verdict: str  # real, uncertain, fake, or low-quality (the latest window was not judged: see reason)
    reason: str | None  # why the latest window was not judged ("no speech ...", "listening ..."); null when it was
    start: float | None  # the latest window's start, seconds on the stream's clock (as Overlay.time); null before one
    end: float | None  # the latest window's end, on the same clock
    voiced: float | None  # share of the latest window's 32 ms frames that are speech (silero)
    level_db: float | None  # the sound's level over the last 100 ms in dBFS (0 is full scale): the page's meter
    windows: int  # windows scored for this stream so far
    skipped: int  # windows passed over because the voice scorer was behind (it always takes the newest)

    def to_message(self) -> Message:
        r = lambda v, n=4: None if v is None else round(float(v), n)  # noqa: E731
        return {"track": self.track, "p_fake": r(self.p_fake), "engines": {k: r(v) for k, v in self.engines.items()},
                "score": r(self.score), "verdict": self.verdict, "reason": self.reason, "start": r(self.start, 3),
                "end": r(self.end, 3), "voiced": r(self.voiced, 3), "level_db": r(self.level_db, 1),
                "windows": self.windows, "skipped": self.skipped}


@dataclass(frozen=True, slots=True)
class Overlay:
    """Every face found on one analysed frame of one stream, with the frame's own timestamps so the page can
    draw it on the very frame that was scored, and the stream's voice where it has sound."""

    stream: str  # the stream's name
    pts: int | None  # the scored frame's presentation timestamp, in its stream's time base
    time: float  # the scored frame's time in seconds from the stream's start: the page matches it
    frame_size: tuple[int, int]  # width, height of the source frame
    latency_ms: float  # from the frame's decoding to this message
    faces: tuple[FaceOverlay, ...]  # every face found on the frame
    # the stream's verdict: its worst face track's, fused with its voice's by the rule (voice.rule, default
    # "either": the worse of the two); null with neither a face track nor a judged voice
    verdict: str | None
    ts: float = field(default_factory=time.time)  # wall-clock time of the message (Unix seconds)
    voice: VoiceOverlay | None = None  # the stream's voice; absent on the wire for a stream without sound

    def to_message(self) -> Message:
        msg = {"v": VERSION, "type": OVERLAY, "stream": self.stream, "ts": self.ts, "pts": self.pts,
               "time": self.time, "frame_size": list(self.frame_size), "latency_ms": round(self.latency_ms, 1),
               "faces": [f.to_message() for f in self.faces], "verdict": self.verdict}
        if self.voice is not None:
            msg["voice"] = self.voice.to_message()
        return msg


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """What a source reports of itself (its state machine and counters)."""

    state: str  # connecting, streaming, reconnecting, ended, stopped or failed
    url: str  # the source's address, credentials replaced by ***
    fps: float  # frames a second the source delivers
    received: int  # frames decoded since the stream started
    dropped: int  # frames replaced in the buffer by newer ones before they were analysed
    reconnects: int  # reconnect attempts since the stream started
    error: str | None  # the last error, in words (credentials redacted)
    frame_size: tuple[int, int] | None  # width, height of the newest frame; null before the first
    link: dict[str, Any] | None = None  # what the link delivers (WebRTC: received size, bitrate_kbps)
    ring: dict[str, Any] | None = None  # the recording ring: bytes, seconds, packets, mode (evidence/ring.py)

    def to_message(self) -> Message:
        msg = {f.name: getattr(self, f.name) for f in fields(self)}
        for optional in ("link", "ring"):
            if msg[optional] is None:
                del msg[optional]
        return msg


@dataclass(frozen=True, slots=True)
class SchedulerStatus:
    """What the scheduler reports of one stream: the rates it achieves, its latency and its load decisions."""

    analysed_fps: float  # frames a second scored, measured
    target_fps: float  # the rate the scheduler aims at now (lowered under load)
    latency_ms: dict[str, float | None]  # p50 and p95 of frame-to-overlay latency
    shed: bool  # the stream is paused to relieve the load
    tracks: int  # faces tracked now
    scheduler: dict[str, Any]  # the governor: scale of every rate, smoothed load, its latest events in words
    gated_faces: int = 0  # face-frames judged low-quality since the stream started
    reason: str | None = None  # why the stream is slowed or paused now, in words (None: at its full rate)
    priority: int = 0  # the stream's priority under load (SourceConfig.priority)
    watched: bool = False  # someone is watching it (a browser's webcam or screen, relay viewers): kept longest

    def to_message(self) -> Message:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class StreamVerdicts:
    """A stream's face and voice verdicts side by side, and the stream's verdict the rule makes of them (sent in the
    status of a stream that has sound and voice engines)."""

    face: str | None  # the worst face track's verdict; null without a tracked face
    voice: str | None  # the voice's verdict (real, uncertain, fake); null before its first judged window
    stream: str | None  # what the rule makes of the two (as Overlay.verdict)
    rule: str  # the rule: "either" (the worse of the two) or "faces-only" (the voice never counts)

    def to_message(self) -> Message:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Status:
    """One stream's status. `scheduler` is absent for a stream the scheduler no longer holds (a failed or
    removed one); `removed` says the stream was taken away on purpose."""

    stream: str  # the stream's name
    source: SourceStatus | None = None  # the source's fields (on the wire: at the message's top level)
    scheduler: SchedulerStatus | None = None  # the scheduler's fields (on the wire: at the top level too)
    state: str | None = None  # only when there is no source status (a removed stream)
    removed: bool = False  # the stream was removed on purpose (sent only when true)
    ts: float = field(default_factory=time.time)  # wall-clock time of the message (Unix seconds)
    verdicts: StreamVerdicts | None = None  # face and voice verdicts side by side (sent for a stream with sound)
    # The camera's baseline (sent only when it has one, is learning one, or a learning was refused): `bar` (when
    # learned, from what, n_eff, threshold, alpha, rule; null: the global bar), `learning` (seconds, done, faces;
    # null when not learning), `error` (the last learning refusal), `slowed` (analysed below the learned rate)
    baseline: dict[str, Any] | None = None

    def to_message(self) -> Message:
        msg: Message = {"v": VERSION, "type": STATUS, "stream": self.stream, "ts": self.ts}
        if self.source is not None:
            msg.update(self.source.to_message())
        elif self.state is not None:
            msg["state"] = self.state
        if self.scheduler is not None:
            msg.update(self.scheduler.to_message())
        if self.verdicts is not None:
            msg["verdicts"] = self.verdicts.to_message()
        if self.removed:
            msg["removed"] = True
        if self.baseline is not None:
            msg["baseline"] = self.baseline
        return msg


@dataclass(frozen=True, slots=True)
class Alert:
    """One message of an alert's life. `id` is stable for the alert; `key` (id:seq) is unique per message,
    which makes replays idempotent.

    `at` and `faces` never reach the wire: what the evidence recorder needs from the moment the alert started
    (the source time of the first frame judged fake, and the face crops it was raised on); nor does `sound` (a
    voice alert's scored windows)."""

    event: AlertEvent  # start, update or end of the alert's life
    id: str  # the alert's id, stable for its life (also its evidence folder's name)
    seq: int  # the message's number within the alert, from 1; the wire adds key = id:seq
    stream: str  # the stream's name
    track: int  # the face's track id; VOICE_TRACK (-1) for the stream's voice
    started_at: float  # when the face (or voice) was first judged fake (Unix seconds)
    ended_at: float | None  # when it ended; null until the end message
    score_max: float  # the highest smoothed p(fake) so far
    engines: dict[str, float]  # engine name -> its p(fake) at that peak
    evidence: dict[str, str | None]  # evidence file name -> its path (snapshot, clip, recording...)
    ts: float = field(default_factory=time.time)  # wall-clock time of the message (Unix seconds)
    reason: str | None = None  # why an "end" came other than by the verdict: "worker-lost" (a cluster node died)
    # Chain of custody, once the recording is complete: every evidence file's sha256 and size, the redacted
    # source, the models and their weights' hashes, the calibration, the dfstream version (evidence/manifest.py)
    custody: dict[str, Any] | None = None
    # what was judged fake: "face" (a face track) or "voice" (the stream's sound, track VOICE_TRACK); readers of
    # messages from before voices read a missing field as "face"
    modality: Modality = "face"
    # In process only, never on the wire: the start's source time of the first frame judged fake (where the
    # recording's pre-roll is counted from)
    at: float | None = field(default=None, compare=False)
    # In process only, never on the wire: the start's face crops (snapshot, recent crops) as uint8 arrays, for the
    # evidence recorder to write (typed Any: this module imports no numpy)
    faces: Any = field(default=None, compare=False, repr=False)
    # In process only, never on the wire: a voice alert's start carries the windows it was raised on (their sound
    # and scores, stream.live.voices.windows_evidence) for the evidence recorder to write
    sound: Any = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.id}:{self.seq}"

    @classmethod
    def from_message(cls, msg: Message) -> Alert:
        """The record of an alert's wire form (the Redis stream, the alert log); KeyError or ValueError when it is
        not one. Fields the wire adds (`v`, `type`, `key`, `source`) are dropped: `key` follows from id and seq."""
        if msg.get("type") != ALERT:
            raise ValueError(f"not an alert message: type {msg.get('type')!r}")
        return cls(event=msg["event"], id=str(msg["id"]), seq=int(msg["seq"]), stream=str(msg["stream"]),
                   track=int(msg["track"]), started_at=float(msg["started_at"]),
                   ended_at=None if msg.get("ended_at") is None else float(msg["ended_at"]),
                   score_max=float(msg["score_max"]), engines=dict(msg.get("engines") or {}),
                   evidence=dict(msg.get("evidence") or {}), ts=float(msg.get("ts") or time.time()),
                   reason=msg.get("reason"), custody=msg.get("custody"), modality=msg.get("modality") or "face")

    def to_message(self) -> Message:
        return {"v": VERSION, "type": ALERT, "event": self.event, "id": self.id, "key": self.key, "seq": self.seq,
                "stream": self.stream, "track": self.track, "started_at": self.started_at,
                "ended_at": self.ended_at, "score_max": self.score_max, "engines": dict(self.engines),
                "evidence": dict(self.evidence), "ts": self.ts, "modality": self.modality,
                **({"reason": self.reason} if self.reason else {}),
                **({"custody": self.custody} if self.custody is not None else {})}


@dataclass(frozen=True, slots=True)
class AlertClosing:
    """In-process only: an alert's face is gone (its last analysed frame at source time `at`), but its recording
    is still running. The evidence recorder records the post-roll and answers with `Custody`; the lifecycle sends
    the alert's `end` then, carrying it."""

    alert_id: str  # the closing alert's id
    stream: str  # its stream's name
    at: float | None  # source time of its last analysed frame: the post-roll is counted from it


@dataclass(frozen=True, slots=True)
class Custody:
    """In-process only: the evidence recorder's answer to an alert, once its recording is complete (or known not
    to exist: `custody` None). The lifecycle amends the alert with it: `end` if the alert has closed, else an
    `update`. `recording_state` is what the alert's evidence says from then on ("complete" or "none")."""

    alert_id: str  # the alert the recorder answers
    recording_state: str  # what the alert's evidence says from now on: complete, or none (no recording made)
    custody: dict[str, Any] | None = None  # the manifest's summary (as Alert.custody); null when nothing was recorded


Record = Overlay | Status | Alert | AlertClosing | Custody
WIRE: tuple[type, ...] = (Overlay, Status, Alert)  # the records whose wire form leaves the process
