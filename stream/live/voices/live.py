"""The live voice path's thread: every stream's sound, windowed, gated by the speech detector and scored by the
voice engines, on a thread of its own, apart from the face scheduler.

Why its own thread: a voice window costs seconds of CPU (AASIST: about 3 s per 4 s window on a loaded 2-core
machine, docs/voices.md), while the face loop passes several times a second; on the scheduler's thread one window
would stall every stream's faces that long. Here the voice engines run with their own small torch pool
(`voice.threads`, 1 by default; torch's pool size is per thread), so faces keep the other cores. When no stream has
sound, the thread only wakes every `POLL_S` to find nothing due.

Pacing (`due`, a named policy): a stream is due when its ring holds a full window and `hop_s` of new sound has
come since its last window; each pass scores the newest window of up to `STREAMS_PER_PASS` due streams, the
longest-waiting first, one batch per engine. Trade-off: a scorer that keeps up scores a window every `hop_s`
(windows overlap by window - hop; 2 s of 4 s by default, so a splice lands inside some window), and one that falls
behind never queues: it skips to the newest window and counts the windows it passed over (`skipped`), so a
verdict is at most one window plus one pass old, at the price of leaving stretches of sound unjudged. A shorter hop
reacts sooner and costs proportionally more; a longer one leaves more of a voice unheard.

Threads: feeds write the rings on the sources' threads; this thread owns every `VoiceTrack`'s verdict and
counters; the scheduler reads a stream's `voice` object (`overlay`) and verdict under the loop's lock, which is
never held during inference, only while a window is judged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import numpy as np

from engines.calibration import calibration_of
from engines.voice_base import VoiceEngine
from stream.config.voices import VoiceConfig
from stream.live.scoring import Fusion
from stream.live.sources.live import StreamSource
from stream.live.verdicts.alerts import AlertManager
from stream.live.verdicts.judge import Bars
from stream.live.voices.feed import AudioFeed
from stream.live.voices.judge import VoiceJudge
from stream.live.voices.ring import RING_WINDOWS, AudioRing, Snapshot
from stream.live.voices.scoring import MAX_BATCH
from stream.live.voices.track import ScoredWindow, VoiceTrack
from stream.live.voices.vad import SpeechDetector
from stream.messages import VoiceOverlay

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often the thread looks for due windows: a small fraction of any sensible hop
STREAMS_PER_PASS = 8  # due streams scored per pass: the rest go first in the next, so no verdict waits for all


class VoiceLoop:
    def __init__(self, engines: Sequence[VoiceEngine], config: VoiceConfig | None = None,
                 alerts: AlertManager | None = None, detector: SpeechDetector | None = None,
                 bars: Bars | None = None) -> None:
        """`alerts` is the service's lifecycle (None, or the "faces-only" rule: voices are never alerted on);
        `bars` each stream's voice bar (its voice baseline's policy, else `config.verdict`)."""
        if not engines:
            raise ValueError("the voice path needs at least one voice engine")
        rates = {e.spec.sample_rate for e in engines}
        if len(rates) != 1:
            raise ValueError(f"voice engines at different sample rates cannot share one ring: {sorted(rates)}")
        self.engines = list(engines)
        self.config = config or VoiceConfig()
        self.rate = rates.pop()
        self.need = max(e.spec.samples for e in self.engines)  # the longest window: what makes a stream due
        self.hop = max(1, int(round(self.config.hop_s * self.rate)))
        self.detector = detector or SpeechDetector(self.config.speech)
        self.fusion = Fusion(self.config.verdict.weights)
        self.judge = VoiceJudge(self.config.verdict, alerts if self.config.rule == "either" else None,
                                self.need / self.rate, bars)
        self._tracks: dict[str, VoiceTrack] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0

    # --- streams -------------------------------------------------------------------------------------------
    def attach(self, source: StreamSource) -> None:
        """Listen to `source`'s sound (before it starts: a PyAV source opens its audio track with the container)."""
        ring = AudioRing(RING_WINDOWS * self.need, self.rate)
        unsubscribe = source.subscribe_audio(AudioFeed(ring))
        with self._lock:
            self._tracks[source.name] = VoiceTrack(source.name, ring, self.judge.new_verdict(), unsubscribe)

    def detach(self, name: str) -> None:
        """Stop listening; once this returns no window of the stream is judged again (its alert is ended)."""
        with self._lock:
            track = self._tracks.pop(name, None)
            if track is not None:
                track.unsubscribe()
                self.judge.removed(track)

    def overlay(self, name: str) -> VoiceOverlay | None:
        """The stream's `voice` object now (None: no voice path for it, or no sound yet)."""
        with self._lock:
            track = self._tracks.get(name)
            return self.judge.overlay(track, self.config.lost_after_s) if track is not None else None

    def hears(self, name: str) -> bool:
        """Whether the voice path listens to `name` (it has a voice track, with or without sound so far)."""
        with self._lock:
            return name in self._tracks

    def verdict(self, name: str) -> str | None:
        with self._lock:
            track = self._tracks.get(name)
            return self.judge.verdict(track) if track is not None else None

    # --- the thread ----------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="voices", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the window being scored (one window: seconds on a slow CPU)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        import torch

        torch.set_num_threads(self.config.threads)  # this thread's pool only (OpenMP's size is per thread)
        while not self._stop.wait(POLL_S):
            try:
                self.step(time.monotonic())
            except Exception:  # one bad window must not end the voice path
                log.exception("voice scoring failed")

    # --- one pass ------------------------------------------------------------------------------------------
    def due(self, now: float) -> list[tuple[VoiceTrack, Snapshot]]:
        """The newest window of each due stream (see the module's pacing), longest-waiting first; marks lost
        sound on the way."""
        picks = []
        with self._lock:
            tracks = list(self._tracks.values())
            for track in tracks:
                ring = track.ring
                if ring.arrived is not None and not track.silent and now - ring.arrived > self.config.lost_after_s:
                    self.judge.lost(track)
        for track in sorted(tracks, key=lambda t: t.scored_at):
            ring = track.ring
            if ring.total < self.need or (track.scored_total and ring.total - track.scored_total < self.hop):
                continue
            snap = ring.latest(self.need)
            if snap is not None:
                picks.append((track, snap))
            if len(picks) == STREAMS_PER_PASS:
                break
        return picks

    def step(self, now: float) -> int:
        """One pass: score the due streams' newest windows and judge them. Returns how many were scored."""
        picks = self.due(now)
        if not picks:
            return 0
        windows = self.score([snap for _, snap in picks])
        with self._lock:
            for (track, snap), window in zip(picks, windows):
                if self._tracks.get(track.name) is not track:
                    continue  # removed while it was scored: never judged after its stream is gone
                if track.scored_total:
                    track.skipped += max(0, (snap.total - track.scored_total) // self.hop - 1)
                track.scored_total, track.scored_at = snap.total, now
                self.judge.judge(track, window)
        self.passes += 1
        return len(picks)

    def score(self, snaps: Sequence[Snapshot]) -> list[ScoredWindow]:
        """Each snapshot's window: the speech gate per engine's span, one batch per engine, the fusion."""
        n = self.need
        voicings = [self.detector.voicing(s.samples) for s in snaps]
        engines: list[dict[str, float]] = [{} for _ in snaps]
        voiced = [voicing.fraction(0, n) for voicing in voicings]
        reasons: list[str | None] = [self.detector.reason(v) for v in voiced]
        for engine in self.engines:
            length = engine.spec.samples
            rows = [i for i, v in enumerate(voicings) if self.detector.reason(v.fraction(n - length, n)) is None]
            for first in range(0, len(rows), MAX_BATCH):
                part = rows[first:first + MAX_BATCH]
                raw = engine.predict(np.stack([snaps[i].samples[n - length:] for i in part]))
                cal = calibration_of(engine)
                p = cal.apply(raw) if cal is not None else raw
                for i, value in zip(part, p):
                    engines[i][engine.name] = float(value)
        out = []
        for i, snap in enumerate(snaps):
            fused = self.fusion(engines[i]) if engines[i] else None
            reason = None if fused is not None else (reasons[i] or "no speech in any engine's window")
            out.append(ScoredWindow(snap.end - n / self.rate, snap.end, voiced[i], engines[i], fused, reason,
                                    snap.samples))
        return out
