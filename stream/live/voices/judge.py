"""Judging a stream's voice: a scored window -> the voice's rolling verdict -> the alert lifecycle, and the `voice`
object every overlay of the stream carries.

The face judge's rules, for sound: one fused p(fake) per window (fused across voice engines by the same
`scoring.Fusion`), the same `TrackVerdict` hysteresis under the voice's own `VerdictPolicy`, and the same
`AlertManager`, fed with the reserved track `VOICE_TRACK` and `modality` "voice". A window without enough speech
is "low-quality" with its reason and, like a low-quality face, leaves the verdict and any alert as they were.
A stream with a voice baseline (`modality: voice`) is judged at its camera's voice bar (`bars`: a
`cameras.CameraBars` of the voice engines, the faces' machinery), and every scored window is announced to
`on_judged` subscribers as the face judge announces faces (a stream learning its voice bar live collects them).
"""

from __future__ import annotations

from collections.abc import Callable

from stream.config.verdicts import VerdictPolicy
from stream.live.listeners import Listeners
from stream.live.verdicts.alerts import AlertManager
from stream.live.verdicts.judge import LOW_QUALITY, Bars, JudgedFace
from stream.live.verdicts.policy import TrackVerdict
from stream.live.voices.track import ScoredWindow, VoiceTrack
from stream.messages import VOICE_TRACK, VoiceOverlay


class VoiceJudge:
    def __init__(self, policy: VerdictPolicy, alerts: AlertManager | None, window_s: float,
                 bars: Bars | None = None) -> None:
        """`alerts` None: voices are judged and shown, never alerted on (the "faces-only" rule); `bars` gives a
        stream with a voice baseline its own policy (None: every stream has `policy`)."""
        self.policy = policy
        self.alerts = alerts
        self.window_s = window_s
        self.bars = bars
        self._judged: Listeners[JudgedFace] = Listeners("judged voice window")

    def new_verdict(self) -> TrackVerdict:
        return TrackVerdict(self.policy)

    def on_judged(self, fn: Callable[[JudgedFace], None]) -> Callable[[], None]:
        """Call `fn(JudgedFace)` for every scored window (track `VOICE_TRACK`; engines None, with the reason, for a
        window without enough speech), on the voice thread; returns the unsubscriber."""
        return self._judged.subscribe(fn)

    def judge(self, track: VoiceTrack, window: ScoredWindow) -> None:
        """Take one scored window: it becomes the latest, and, when judged, updates the verdict and the alert."""
        track.latest = window
        track.windows += 1
        track.recent.append(window)
        track.silent = False
        if self.bars is not None:  # the camera's voice bar from this window on
            track.verdict.policy = self.bars.policy_for(track.name)
        if self._judged:
            self._judged.notify(JudgedFace(track.name, VOICE_TRACK, dict(window.engines) if window.p_fake is not None
                                           else None, window.reason))
        if window.p_fake is None:
            return
        verdict = track.verdict.update(window.p_fake)
        if self.alerts is not None:
            self.alerts.observe(track.name, VOICE_TRACK, verdict, track.verdict.smoothed, dict(window.engines),
                                at=window.end, modality="voice", sound=track.evidence)

    def lost(self, track: VoiceTrack) -> None:
        """The stream's sound stopped: its voice alert ends, and its verdict starts afresh when sound returns."""
        track.silent = True
        track.verdict = self.new_verdict()
        if self.alerts is not None:
            self.alerts.end(track.name, VOICE_TRACK)

    def removed(self, track: VoiceTrack) -> None:
        if self.alerts is not None:
            self.alerts.end(track.name, VOICE_TRACK)

    @staticmethod
    def verdict(track: VoiceTrack) -> str | None:
        """The voice's verdict for the stream's: None until a window was judged (or after the sound was lost)."""
        return track.verdict.verdict if track.verdict.smoothed is not None else None

    def overlay(self, track: VoiceTrack, lost_after_s: float) -> VoiceOverlay | None:
        """The `voice` object of the stream's next overlay; None while the stream has had no sound at all."""
        ring = track.ring
        if ring.total == 0:
            return None
        level, w = ring.level_db(), track.latest
        if track.silent:
            reason = f"no sound for over {lost_after_s:g} s"
        elif w is None:
            reason = f"listening: {ring.total / ring.rate:.1f} of {self.window_s:.1f} s of sound before the first window"
        else:
            reason = w.reason
        judged = w is not None and w.p_fake is not None and not track.silent
        return VoiceOverlay(track=VOICE_TRACK, p_fake=w.p_fake if judged else None,
                            engines=dict(w.engines) if judged else {}, score=track.verdict.smoothed,
                            verdict=track.verdict.verdict if judged else LOW_QUALITY, reason=None if judged else reason,
                            start=w.start if w else None, end=w.end if w else None, voiced=w.voiced if w else None,
                            level_db=level, windows=track.windows, skipped=track.skipped)
