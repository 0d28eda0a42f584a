"""Camera baselines in `serve`: a source's `baseline:` file, live learning through the API, and the learned files
kept beside the persisted cameras (`data_dir/baselines/NAME.json`), so a camera keeps its bar across restarts.

    GET    /api/streams/NAME/baseline                  the bar in force, the learning progress, the last refusal
    POST   /api/streams/NAME/baseline {"seconds": 60}  learn from the next N seconds; answers when fitted
    DELETE /api/streams/NAME/baseline                  forget the learned bar (back to the config's, or the global)

A POST collects the stream's judged faces while it runs normally (stream/live/verdicts/cameras.py), then fits the
bar with the pure rule (baseline.fit) and answers 201 with it, or 422 with the reason when the footage cannot vouch
for the camera (too few samples, a fake or low-quality stretch, no face); 400 for a bad body, 404 for an unknown
stream, 409 while the stream learns already. A refusal changes nothing: the bar in force and its file stay. The
learning runs as its own task, so a client that goes away does not stop it; its result lands in the stream's
status. auth.py has already checked the token, Host, Origin and JSON type of every state-changing request.

Voices (with `voice.models`): the same for each stream's voice bar (`bars.voice`, a `CameraBars` of the voice
engines). A POST learns the voice bar too when the voice path listens to the stream: each part is fitted on its own,
and a part the footage cannot vouch for (too little speech, no sound, no face) is refused with its reason in the
answer (`error`, `voice.error`) and the status while the other is saved (201); 422 only when both are refused.
Learned voice files are `NAME.voice.json`; a source's `voice_baseline:` file is the configured one.

Which bar a camera has: a baseline learned live (its file here), else the source's `baseline:` file, else the
global policy. A learned file that no longer fits the engines (another model or weights) is kept on disk but not
used, and the stream's status says so. Removing a camera through the API forgets its learned bar: a new camera
given the same name must not inherit it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream.config.serve import ServeConfig
from stream.live.scoring import Fusion
from stream.live.verdicts.baseline import Baseline
from stream.live.sources.urls import redact
from stream.live.verdicts.baseline import BaselineError, EngineKey, engine_keys, read, sha256_json, write
from stream.live.verdicts.cameras import AlreadyLearning, CameraBars, CameraBaseline, LearningCancelled

if TYPE_CHECKING:
    from engines.base import Engine
    from engines.calibration import Ensemble
    from engines.voice_base import VoiceEngine
    from stream.live.scheduler.loop import Scheduler
    from stream.live.voices.live import VoiceLoop

log = logging.getLogger(__name__)

BASELINES_DIR = "baselines"
# Longest learning one request may ask for. An hour covers "learn from this shift's footage"; longer belongs to
# `dfstream baseline` on recorded files, where a crash does not lose what was collected (a live session is in
# memory only, and the request waits for it).
MAX_LEARN_S = 3600.0


class LearnRequest(BaseModel):
    """The body of `POST /api/streams/NAME/baseline`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    seconds: float = Field(default=60.0, gt=0, le=MAX_LEARN_S,
                           description="how long to collect the stream's judged faces before fitting its bar")


class Refused(Exception):
    """A baseline request refused: `status` is the HTTP answer, the message the reason."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def _keys(engines: list[Any]) -> tuple[list[EngineKey], str | None]:
    """What a baseline of these engines is keyed by, or why they cannot have one."""
    try:
        return engine_keys(engines), None
    except (ValidationError, AttributeError):
        return [], "the engines' weights are not known (no sha256), and a baseline is tied to them"


def bars_for(config: ServeConfig, engines: list[Engine], ensemble: Ensemble | None,
             voice_engines: list[VoiceEngine] | None = None) -> CameraBars:
    """The judge's camera bars for these engines (a baseline is tied to their weights and calibration), with the
    voice judge's beside them (`voice`) when voice engines run."""
    voice = None
    if voice_engines:
        policy, (vkeys, why) = config.voice.verdict, _keys(list(voice_engines))
        voice = CameraBars(policy, vkeys, None, Fusion(dict(policy.weights)), "+".join(e.name for e in voice_engines),
                           why, modality="voice")
    keys, unsupported = _keys(engines)
    model = ensemble.name if ensemble is not None else "+".join(e.name for e in engines)
    return CameraBars(config.verdict, keys, sha256_json(ensemble) if ensemble is not None else None,
                      Fusion(dict(config.verdict.weights), ensemble), model, unsupported, voice=voice)


def voice_fps(config: ServeConfig) -> float:
    """A stream's scored voice windows a second, when the voice path keeps up: what a voice baseline's fps is."""
    return 1.0 / config.voice.hop_s


def configured(bars: CameraBars | None, name: str, path: Path, fps: float) -> CameraBaseline:
    """A source's `baseline:` (or `voice_baseline:`) file, read and checked against the engines, the modality and
    the rate of updates (`fps`: analysed frames, or voice windows, a second)."""
    if bars is None:
        raise BaselineError(f"{path}: cannot judge {name}'s voice with a baseline: no voice engines run "
                            "(voice.models)")
    if bars.unsupported:
        raise BaselineError(f"{path}: cannot judge {name} with a baseline: {bars.unsupported}")
    baseline = read(path)
    bars.check(baseline, path, fps)
    return CameraBaseline(baseline, "config", path)


def check_sources(config: ServeConfig, bars: CameraBars) -> None:
    """Refuse, at start and before anything runs, a source whose `baseline:` or `voice_baseline:` does not fit
    (BaselineError)."""
    for sc in config.sources:
        if sc.baseline is not None:
            configured(bars, sc.name, sc.baseline, sc.analysed_fps)
        if sc.voice_baseline is not None:
            configured(bars.voice, sc.name, sc.voice_baseline, voice_fps(config))


@dataclass(frozen=True, slots=True)
class Learned:
    """What one POST learned: each part's new bar, or the reason it was refused (the voice part: None when the
    voice path does not listen to the stream)."""

    face: CameraBaseline | None
    face_error: str | None
    voice: CameraBaseline | None = None
    voice_error: str | None = None
    voice_tried: bool = False

    def to_json(self, stream: str) -> dict:
        out = {"stream": stream, "bar": self.face.to_json() if self.face else None,
               "summary": self.face.baseline.summary() if self.face else None, "error": self.face_error}
        if self.voice_tried:
            out["voice"] = {"bar": self.voice.to_json() if self.voice else None, "error": self.voice_error,
                            "summary": self.voice.baseline.summary() if self.voice else None}
        return out


class CameraBaselines:
    """Each camera's bars in one server (faces, and voices beside them): loading, checking, learning, saving and
    forgetting baselines."""

    def __init__(self, config: ServeConfig, bars: CameraBars, scheduler: Scheduler,
                 voices: VoiceLoop | None = None) -> None:
        self.config = config
        self.bars = bars
        self.scheduler = scheduler
        self.voices = voices
        self.folder = config.data_dir / BASELINES_DIR
        self._tasks: set[asyncio.Task] = set()

    def path(self, name: str, modality: str = "face") -> Path:
        return self.folder / (f"{name}.json" if modality == "face" else f"{name}.{modality}.json")

    def _parts(self) -> list[tuple[CameraBars, str]]:
        """(bars, modality) of each judged modality: faces, and voices when voice engines run."""
        return [(self.bars, "face")] + ([(self.bars.voice, "voice")] if self.bars.voice is not None else [])

    def attach(self, name: str, fps: float, configured: Path | None = None, voice: Path | None = None) -> None:
        """A stream starts (analysed at `fps`): per modality its learned bar, else its config's file (`configured`,
        `voice`; checked: BaselineError), else the global one."""
        for bars, modality in self._parts():
            given, rate = (configured, fps) if modality == "face" else (voice, voice_fps(self.config))
            bar = self._from_config(bars, name, given, rate) if given is not None else None
            learned = self.path(name, modality)
            if learned.is_file() and not bars.unsupported:
                try:
                    baseline = read(learned)
                    bars.check(baseline, learned, rate)
                    bar = CameraBaseline(baseline, "learned", learned)
                except BaselineError as exc:
                    log.error("stream %s: its learned %s baseline is not used: %s", name, modality, exc)
                    bars.note(name, f"the learned baseline is not used: {exc}")
            bars.set(name, bar)

    def _from_config(self, bars: CameraBars | None, name: str, path: Path, fps: float) -> CameraBaseline:
        return configured(bars, name, path, fps)

    def forget(self, name: str) -> None:
        """The camera was removed through the API: its learned files go, and its bars with them."""
        for bars, modality in self._parts():
            bars.cancel(name, "the stream was removed while it was learning")
            self.path(name, modality).unlink(missing_ok=True)
            bars.set(name, None)

    def stream_removed(self, name: str) -> None:
        """A stream stopped (removed, or moved to another node): its sessions end unfitted."""
        for bars, _ in self._parts():
            bars.cancel(name, "the stream was removed while it was learning")

    # --- the API's operations ---------------------------------------------------------------------------------
    def _local(self, name: str) -> Any:
        try:
            return self.scheduler.stream(name).source
        except KeyError:
            raise Refused(404, f"no such stream: {name}") from None

    def describe(self, name: str) -> dict:
        source = self._local(name)
        status = self.bars.status(name, self.scheduler.target_fps(self.scheduler.stream(name))) or {
            "bar": None, "learning": None, "error": None}
        out = {"stream": source.name, **status,
               "global": {"t_high": self.config.verdict.t_high, "t_low": self.config.verdict.t_low}}
        if self.bars.voice is not None:
            out["voice"] = status.get("voice") or {"bar": None, "learning": None, "error": None}
            out["voice"]["global"] = {"t_high": self.config.voice.verdict.t_high,
                                      "t_low": self.config.voice.verdict.t_low}
        return out

    def _hears(self, name: str) -> bool:
        voice = self.bars.voice
        return voice is not None and not voice.unsupported and self.voices is not None and self.voices.hears(name)

    async def learn(self, name: str, seconds: float) -> Learned:
        """Learn `name`'s bars from its next `seconds` (its voice's too when the voice path listens to it); the bars
        in force until then, and for a refused part, stay."""
        source = self._local(name)
        if self.bars.unsupported:
            raise Refused(409, f"{name} cannot learn a baseline: {self.bars.unsupported}")
        try:
            session = self.bars.start(name, seconds, source.analysed_fps)
        except AlreadyLearning as exc:
            raise Refused(409, str(exc)) from None
        voice = None
        if self._hears(name):
            try:
                voice = self.bars.voice.start(name, seconds, voice_fps(self.config))
            except AlreadyLearning as exc:
                self.bars.cancel(name, str(exc))
                raise Refused(409, str(exc)) from None
        task = asyncio.ensure_future(self._learn(session, voice, redact(source.url)))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    async def _learn(self, session: Any, voice: Any, source: str) -> Learned:
        await asyncio.sleep(session.seconds)  # the stream runs normally meanwhile; the judges feed the sessions
        face, face_error = await self._fit(self.bars, session, source, "face")
        voice_bar = voice_error = None
        if voice is not None:
            voice_bar, voice_error = await self._fit(self.bars.voice, voice, source, "voice")
        if face is None and (voice is None or voice_bar is None):
            both = f"{face_error}" + (f"; the voice: {voice_error}" if voice is not None else "")
            raise Refused(422, both)
        return Learned(face, face_error, voice_bar, voice_error, voice is not None)

    async def _fit(self, bars: CameraBars, session: Any, source: str, modality: str
                   ) -> tuple[CameraBaseline | None, str | None]:
        """Fit and save one part's bar: (the bar in force now, None) or (None, why it was refused)."""
        loop = asyncio.get_running_loop()
        try:
            baseline: Baseline = await loop.run_in_executor(None, bars.finish, session, source)
        except LearningCancelled as exc:
            raise Refused(409, str(exc)) from None
        except BaselineError as exc:
            return None, str(exc)
        path = self.path(session.stream, modality)
        try:
            await loop.run_in_executor(None, lambda: (self.folder.mkdir(parents=True, exist_ok=True),
                                                      write(baseline, path)))
        except OSError as exc:
            bars.note(session.stream, f"the learned baseline could not be saved to {path} ({exc})")
            raise Refused(500, f"the baseline could not be saved to {path} ({exc}); the bar is unchanged") from None
        bar = CameraBaseline(baseline, "learned", path)
        bars.set(session.stream, bar)
        log.info("stream %s: %s baseline learned: %s", session.stream, modality, baseline.summary())
        return bar, None

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved: its client may have gone
            log.info("baseline learning ended: %s", task.exception())

    def delete(self, name: str) -> dict:
        """Forget the learned bars (faces and voice): back to the config's baselines, or the global bars."""
        self._local(name)
        learned = [(bars, m) for bars, m in self._parts() if (bar := bars.get(name)) and bar.origin == "learned"]
        if not learned:
            if any(bars.get(name) for bars, _ in self._parts()):
                bar = next(bars.get(name) for bars, _ in self._parts() if bars.get(name))
                raise Refused(409, f"{name}'s baseline comes from the config file ({bar.path}): remove its "
                                   "baseline: line there")
            raise Refused(404, f"{name} has no baseline: it is judged at the global bar")
        source = self._local(name)
        config = getattr(source, "config", None)
        for bars, modality in learned:
            self.path(name, modality).unlink(missing_ok=True)
            given = getattr(config, "baseline" if modality == "face" else "voice_baseline", None)
            rate = source.analysed_fps if modality == "face" else voice_fps(self.config)
            bars.set(name, self._from_config(bars, name, given, rate) if given else None)
        return self.describe(name)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# ------------------------------------------------------------------------------------------------- the routes
BASELINES_KEY = web.AppKey("baselines", CameraBaselines)
BODY_HELP = 'send JSON {"seconds": N} (how long to learn, 0 < N <= %g; default 60)' % MAX_LEARN_S


def _http(exc: Refused) -> web.Response:
    """A refusal in words, like every other route's (the page shows the text)."""
    return web.Response(status=exc.status, text=str(exc))


async def get_baseline(request: web.Request) -> web.Response:
    try:
        return web.json_response(request.app[BASELINES_KEY].describe(request.match_info["name"]))
    except Refused as exc:
        return _http(exc)


async def post_baseline(request: web.Request) -> web.Response:
    baselines = request.app[BASELINES_KEY]
    name = request.match_info["name"]
    try:
        raw = await request.read()
        body = LearnRequest.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "body"
        return _http(Refused(400, f"{where}: {first['msg']}; {BODY_HELP}"))
    try:
        learned = await baselines.learn(name, body.seconds)
    except Refused as exc:
        return _http(exc)
    return web.json_response(learned.to_json(name), status=201)


async def delete_baseline(request: web.Request) -> web.Response:
    try:
        return web.json_response(request.app[BASELINES_KEY].delete(request.match_info["name"]))
    except Refused as exc:
        return _http(exc)
