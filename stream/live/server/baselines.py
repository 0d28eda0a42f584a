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

Which bar a camera has: a baseline learned live (its file here), else the source's `baseline:` file, else the
global policy. A learned file that no longer fits the engines (another model or weights) is kept on disk but not
used, and the stream's status says so. Removing a camera through the API forgets its learned bar: a new camera
given the same name must not inherit it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream.config.serve import ServeConfig
from stream.live.scoring import Fusion
from stream.live.sources.urls import redact
from stream.live.verdicts.baseline import BaselineError, EngineKey, engine_keys, read, sha256_json, write
from stream.live.verdicts.cameras import AlreadyLearning, CameraBars, CameraBaseline, LearningCancelled

if TYPE_CHECKING:
    from engines.base import Engine
    from engines.calibration import Ensemble
    from stream.live.scheduler.loop import Scheduler

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


def bars_for(config: ServeConfig, engines: list[Engine], ensemble: Ensemble | None) -> CameraBars:
    """The judge's camera bars for these engines (a baseline is tied to their weights and calibration)."""
    try:
        keys: list[EngineKey] = engine_keys(engines)
        unsupported = None
    except (ValidationError, AttributeError):
        keys, unsupported = [], "the engines' weights are not known (no sha256), and a baseline is tied to them"
    model = ensemble.name if ensemble is not None else "+".join(e.name for e in engines)
    return CameraBars(config.verdict, keys, sha256_json(ensemble) if ensemble is not None else None,
                      Fusion(dict(config.verdict.weights), ensemble), model, unsupported)


def configured(bars: CameraBars, name: str, path: Path, fps: float) -> CameraBaseline:
    """A source's `baseline:` file, read and checked against the engines and the source's analysed rate."""
    if bars.unsupported:
        raise BaselineError(f"{path}: cannot judge {name} with a baseline: {bars.unsupported}")
    baseline = read(path)
    bars.check(baseline, path, fps)
    return CameraBaseline(baseline, "config", path)


def check_sources(config: ServeConfig, bars: CameraBars) -> None:
    """Refuse, at start and before anything runs, a source whose `baseline:` does not fit (BaselineError)."""
    for sc in config.sources:
        if sc.baseline is not None:
            configured(bars, sc.name, sc.baseline, sc.analysed_fps)


class CameraBaselines:
    """Each camera's bar in one server: loading, checking, learning, saving and forgetting baselines."""

    def __init__(self, config: ServeConfig, bars: CameraBars, scheduler: Scheduler) -> None:
        self.config = config
        self.bars = bars
        self.scheduler = scheduler
        self.folder = config.data_dir / BASELINES_DIR
        self._tasks: set[asyncio.Task] = set()

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def _from_config(self, name: str, path: Path, fps: float) -> CameraBaseline:
        return configured(self.bars, name, path, fps)

    def attach(self, name: str, fps: float, configured: Path | None = None) -> None:
        """A stream starts (analysed at `fps`): its learned bar, else its config's `configured` file (checked:
        BaselineError), else the global one."""
        bar = self._from_config(name, configured, fps) if configured is not None else None
        learned = self.path(name)
        if learned.is_file() and not self.bars.unsupported:
            try:
                baseline = read(learned)
                self.bars.check(baseline, learned, fps)
                bar = CameraBaseline(baseline, "learned", learned)
            except BaselineError as exc:
                log.error("stream %s: its learned baseline is not used: %s", name, exc)
                self.bars.note(name, f"the learned baseline is not used: {exc}")
        self.bars.set(name, bar)

    def forget(self, name: str) -> None:
        """The camera was removed through the API: its learned file goes, and its bar with it."""
        self.bars.cancel(name, "the stream was removed while it was learning")
        self.path(name).unlink(missing_ok=True)
        self.bars.set(name, None)

    def stream_removed(self, name: str) -> None:
        """A stream stopped (removed, or moved to another node): a session of it ends unfitted."""
        self.bars.cancel(name, "the stream was removed while it was learning")

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
        return {"stream": source.name, **status,
                "global": {"t_high": self.config.verdict.t_high, "t_low": self.config.verdict.t_low}}

    async def learn(self, name: str, seconds: float) -> CameraBaseline:
        """Learn `name`'s bar from its next `seconds`; the bar in force until then, and on a refusal, stays."""
        source = self._local(name)
        if self.bars.unsupported:
            raise Refused(409, f"{name} cannot learn a baseline: {self.bars.unsupported}")
        try:
            session = self.bars.start(name, seconds, source.analysed_fps)
        except AlreadyLearning as exc:
            raise Refused(409, str(exc)) from None
        task = asyncio.ensure_future(self._learn(session, redact(source.url)))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    async def _learn(self, session: Any, source: str) -> CameraBaseline:
        await asyncio.sleep(session.seconds)  # the stream runs normally meanwhile; the judge feeds the session
        loop = asyncio.get_running_loop()
        try:
            baseline = await loop.run_in_executor(None, self.bars.finish, session, source)
        except LearningCancelled as exc:
            raise Refused(409, str(exc)) from None
        except BaselineError as exc:
            raise Refused(422, str(exc)) from None
        path = self.path(session.stream)
        try:
            await loop.run_in_executor(None, lambda: (self.folder.mkdir(parents=True, exist_ok=True),
                                                      write(baseline, path)))
        except OSError as exc:
            self.bars.note(session.stream, f"the learned baseline could not be saved to {path} ({exc})")
            raise Refused(500, f"the baseline could not be saved to {path} ({exc}); the bar is unchanged") from None
        bar = CameraBaseline(baseline, "learned", path)
        self.bars.set(session.stream, bar)
        log.info("stream %s: baseline learned: %s", session.stream, baseline.summary())
        return bar

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved: its client may have gone
            log.info("baseline learning ended: %s", task.exception())

    def delete(self, name: str) -> dict:
        """Forget the learned bar: back to the config's baseline, or the global bar."""
        self._local(name)
        bar = self.bars.get(name)
        if bar is None:
            raise Refused(404, f"{name} has no baseline: it is judged at the global bar")
        if bar.origin == "config":
            raise Refused(409, f"{name}'s baseline comes from the config file ({bar.path}): remove its baseline: "
                               "line there")
        self.path(name).unlink(missing_ok=True)
        source = self._local(name)
        configured = getattr(getattr(source, "config", None), "baseline", None)
        self.bars.set(name, self._from_config(name, configured, source.analysed_fps) if configured else None)
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
        bar = await baselines.learn(name, body.seconds)
    except Refused as exc:
        return _http(exc)
    return web.json_response({"stream": name, "bar": bar.to_json(), "summary": bar.baseline.summary()}, status=201)


async def delete_baseline(request: web.Request) -> web.Response:
    try:
        return web.json_response(request.app[BASELINES_KEY].delete(request.match_info["name"]))
    except Refused as exc:
        return _http(exc)
