"""Each camera's bar in `serve`: the global verdict policy, or the policy of the camera's baseline (baseline.py),
and the live learning of a baseline ("learn normal").

`CameraBars` holds, per stream name, the baseline in force (from a source's `baseline:` file or learned live) and
at most one learning session. The judge asks it for a stream's policy on every face (`policy_for`), and a session
collects what the judge announces (`on_judged`): per track, the engine scores of each judged face-frame, in order,
which is what `baseline.fit` turns into the camera's bar. So a baseline learned live is fitted on the very scores
the live verdict smooths (the fused, smoothed track score, quality gate applied), under the global policy.

Voices use the same class: a second `CameraBars` (`modality="voice"`, the voice engines' keys, the voice's own
policy and fusion) collects the voice judge's scored windows (voices/judge.py announces them as `JudgedFace`s of
the stream's voice track) and gives the voice judge each stream's voice bar. The face bars hold it as `voice`, so a
stream's status carries both side by side.

No file and no clock of its own: the server (stream/live/server/baselines.py) saves and loads the files and times
the sessions. Threads: `policy_for` and `on_judged` run on the scheduler's thread, everything else on the event
loop; one lock guards the tables, and the tables are replaced, never changed in place, under it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stream.config.verdicts import VerdictPolicy
from stream.live.verdicts.baseline import Baseline, BaselineError, EngineKey, Modality, check, fit
from stream.live.verdicts.judge import JudgedFace

Fusion = Callable[[Mapping[str, float]], float | None]
Origin = Literal["learned", "config"]


class AlreadyLearning(Exception):
    """A stream is learning its baseline already: one session at a time."""


class LearningCancelled(Exception):
    """A session ended before it was fitted (its stream was removed); the message says why."""


@dataclass(frozen=True, slots=True)
class CameraBaseline:
    """The baseline a camera is judged with, and where it came from (a file in the config, or learned live)."""

    baseline: Baseline
    origin: Origin
    path: Path

    def to_json(self) -> dict:
        b = self.baseline
        return {"modality": b.modality, "origin": self.origin, "path": str(self.path), "learned_at": b.learned_at,
                "source": b.source,
                "model": b.model, "faces": b.faces, "n_eff": b.n_eff, "block": b.block, "alpha": b.alpha,
                "rule": b.rule, "clipped": b.clipped, "threshold": b.threshold, "t_low": b.t_low,
                "t_under": b.under.threshold if b.under else None,
                "global_threshold": b.policy.t_high, "fps": b.fps}


@dataclass(eq=False)
class Session:
    """One stream learning its baseline: the judged faces so far, per track in order, and the gated ones."""

    stream: str
    seconds: float
    fps: float
    modality: Modality = "face"
    started: float = field(default_factory=time.monotonic)
    tracks: dict[int, list[Mapping[str, float]]] = field(default_factory=dict)
    faces: int = 0
    gated: int = 0
    reason: str | None = None

    def add(self, face: JudgedFace) -> None:
        if face.engines is None:
            self.gated += 1
            self.reason = face.reason or self.reason
        else:
            self.tracks.setdefault(face.track, []).append(face.engines)
            self.faces += 1

    def progress(self, now: float | None = None) -> dict:
        done = min(self.seconds, (time.monotonic() if now is None else now) - self.started)
        if self.modality == "voice":  # one track, the stream's voice: its windows with speech, and without
            return {"seconds": self.seconds, "done": round(done, 1), "windows": self.faces, "gated": self.gated}
        return {"seconds": self.seconds, "done": round(done, 1), "faces": self.faces, "gated": self.gated,
                "tracks": len(self.tracks)}


class CameraBars:
    def __init__(self, policy: VerdictPolicy, engines: Sequence[EngineKey], ensemble_sha256: str | None,
                 fusion: Fusion, model: str, unsupported: str | None = None, modality: Modality = "face",
                 voice: CameraBars | None = None) -> None:
        """`engines`, `ensemble_sha256`: what this server runs (a baseline must have been learned with them);
        `fusion`: the judge's; `model`: the name a learned baseline records; `unsupported`: why these engines
        cannot have baselines at all (None: they can); `modality`: what these bars judge; `voice`: the streams'
        voice bars beside these face bars (their status is shown with these)."""
        self.policy = policy
        self.modality = modality
        self.voice = voice
        self.unsupported = unsupported
        self.engines = list(engines)
        self.ensemble_sha256 = ensemble_sha256
        self.fusion = fusion
        self.model = model
        self._bars: dict[str, CameraBaseline] = {}
        self._policies: dict[str, VerdictPolicy] = {}
        self._sessions: dict[str, Session] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    # --- the bar ---------------------------------------------------------------------------------------------
    def policy_for(self, stream: str) -> VerdictPolicy:
        """The policy a stream's tracks are judged with: its baseline's, else the global one."""
        return self._policies.get(stream, self.policy)

    def check(self, baseline: Baseline, path: Path, fps: float) -> None:
        """Refuse a baseline learned with other engines, weights, calibration or ensemble, or at another analysed
        rate than the stream's (`fps`): the same checks `scan --baseline` makes."""
        check(baseline, path, self.engines, self.ensemble_sha256, self.modality)
        if baseline.fps is not None and abs(baseline.fps - fps) > 1e-9:
            if self.modality == "voice":
                raise BaselineError(f"{path}: learned with a window every {1 / baseline.fps:g} s, but the voice path "
                                    f"scores one every {1 / fps:g} s (voice.hop_s): its smoothing would span another "
                                    f"time; set voice.hop_s: {1 / baseline.fps:g} or learn it again")
            raise BaselineError(f"{path}: learned at {baseline.fps:g} analysed fps, but the stream analyses at "
                                f"{fps:g} (analysed_fps): its smoothing would span another time; set analysed_fps: "
                                f"{baseline.fps:g} or learn it again")

    def get(self, stream: str) -> CameraBaseline | None:
        return self._bars.get(stream)

    def set(self, stream: str, bar: CameraBaseline | None) -> None:
        """Judge `stream` with `bar` from its next face on (None: the global policy)."""
        with self._lock:
            bars = {k: v for k, v in self._bars.items() if k != stream}
            if bar is not None:
                bars[stream] = bar
            self._bars = bars
            self._policies = {k: v.baseline.verdict_policy() for k, v in bars.items()}

    # --- learning ----------------------------------------------------------------------------------------------
    def start(self, stream: str, seconds: float, fps: float) -> Session:
        """Begin collecting `stream`'s judged faces. Raises AlreadyLearning while a session runs."""
        with self._lock:
            if stream in self._sessions:
                raise AlreadyLearning(f"{stream} is learning its baseline already: "
                                      f"{self._sessions[stream].progress()['done']:g} of "
                                      f"{self._sessions[stream].seconds:g} s done")
            session = Session(stream, seconds, fps, self.modality)
            self._sessions = {**self._sessions, stream: session}
            self._errors = {k: v for k, v in self._errors.items() if k != stream}
        return session

    def on_judged(self, face: JudgedFace) -> None:
        """The judge's subscriber: a face of a learning stream joins its session."""
        session = self._sessions.get(face.stream)
        if session is not None:
            session.add(face)

    def learning(self, stream: str) -> Session | None:
        return self._sessions.get(stream)

    def note(self, stream: str, text: str) -> None:
        """Say something wrong with a stream's baseline in its status (until it learns again)."""
        with self._lock:
            self._errors = {**self._errors, stream: text}

    def cancel(self, stream: str, why: str) -> None:
        """End a session without fitting (its stream was removed): `finish` then refuses with `why`."""
        with self._lock:
            if stream in self._sessions:
                self._sessions = {k: v for k, v in self._sessions.items() if k != stream}
                self._errors = {**self._errors, stream: why}

    def finish(self, session: Session, source: str) -> Baseline:
        """Stop collecting and fit the camera's bar under the global policy. Raises BaselineError, saying why, when
        the footage cannot vouch for the camera (and keeps the reason for the stream's status); the bar in force
        is not touched here either way."""
        with self._lock:
            current = self._sessions.get(session.stream)
            if current is not session:
                raise LearningCancelled(self._errors.get(session.stream, "the learning session was cancelled"))
            self._sessions = {k: v for k, v in self._sessions.items() if k != session.stream}
        try:
            return fit(list(session.tracks.values()), self.policy, model=self.model, engines=self.engines,
                       source=source, fps=session.fps, gated=session.gated, gated_reason=session.reason,
                       fusion=self.fusion, ensemble_sha256=self.ensemble_sha256, modality=self.modality)
        except BaselineError as exc:
            with self._lock:
                self._errors = {**self._errors, session.stream: str(exc)}
            raise

    # --- status ------------------------------------------------------------------------------------------------
    def status(self, stream: str, target_fps: float | None = None) -> dict | None:
        """What a stream's status says of its bar: the baseline in force, the session's progress, the last
        learning refusal; the voice's beside it (`voice`). None when there is nothing to say (the global bars, never
        learned)."""
        bar, session, error = self._bars.get(stream), self._sessions.get(stream), self._errors.get(stream)
        voice = self.voice.status(stream) if self.voice is not None else None
        if bar is None and session is None and error is None and voice is None:
            return None
        out: dict = {"bar": bar.to_json() if bar else None, "learning": session.progress() if session else None,
                     "error": error} | ({"voice": voice} if voice is not None else {})
        if bar is not None and bar.baseline.fps is not None and target_fps is not None:
            out["slowed"] = target_fps < bar.baseline.fps - 1e-6  # the governor lowered the rate below the learned
        return out
