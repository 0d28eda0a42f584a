"""LiveService: owns the sources, the scheduler, the voice path (with voice engines), the bus with its subscribers
(wiring.py) and the hub, and starts and stops them together.

Streams added or removed through the API (`api_add`, `api_remove`) are checked against the source policy and
the stream limit, and remembered in `data_dir/streams.json` (persist.py) so they come back after a restart.
Each camera's bar (its baseline: a config file, or learned live and kept in `data_dir/baselines/`) is
`baselines` (baselines.py); a source's `baseline:` that does not fit the engines is refused here, at start.

With a `remote` (`serve --ray`: stream.cluster.gateway), every camera from the config or the API runs there
instead of on the local scheduler, and their messages come back through `remote` into the hub; browser webcams
(`add_source`) stay local.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engines.base import Engine
from engines.calibration import Ensemble
from engines.quality import smallest_floor_px

from stream.live.verdicts.alerts import AlertManager
from stream.live.bus import ALERTS_LOG_NAME, AlertLog, MessageBus
from stream.live.bus.channels import open_channels
from stream.config.serve import ServeConfig, source_name_for
from stream.live.evidence.names import EVIDENCE_DIR
from stream.live.evidence.provenance import provenance
from stream.live.evidence.recorder import Recorder
from stream.live.evidence.store import EvidenceStore
from stream.live.faces import FaceDetector
from stream.live.server.auth import check_api_source
from stream.live.server.baselines import CameraBaselines, bars_for, check_sources
from stream.live.server.hub import Hub
from stream.live.server.persist import STREAMS_FILE, StreamStore
from stream.live.server.wiring import wire, wire_baselines
from stream.live.scheduler.loop import Scheduler
from stream.live.sources import SourceError, SourceState
from stream.messages import Status
from stream.live.sources.live import AVLiveSource, SourceConfig, StreamSource, validate_url

if TYPE_CHECKING:
    from engines.voice_base import VoiceEngine
    from stream.live.verdicts.cameras import CameraBars
    from stream.live.voices.live import VoiceLoop

log = logging.getLogger(__name__)


class RemoteStreams(Protocol):
    """Where cameras run when not here (the cluster). `start` hands it the hub's feed and this bus's source id
    (so it can skip messages this process published itself)."""

    def start(self, deliver: Callable[[dict], None], own_source: str | None) -> None: ...
    def add(self, config: SourceConfig) -> Any: ...
    def remove(self, name: str) -> bool: ...
    def names(self) -> set[str]: ...
    def statuses(self) -> dict[str, dict]: ...
    def fetch_evidence(self, alert_id: str, name: str, folder: Path) -> Any:
        """Bring an alert's evidence file written elsewhere into `folder`; LookupError saying why it cannot."""
    def close(self) -> None: ...


class RemoteUnavailable(Exception):
    """The remote does not answer now (a cluster's head lost): nothing was changed (the API answers 503)."""


class StreamLimit(Exception):
    """Already `max_streams` streams: the message says so (the API answers 503 with it)."""


class LiveService:
    def __init__(self, config: ServeConfig, engines: Sequence[Engine], detector: FaceDetector | None = None,
                 ensemble: Ensemble | None = None, remote: RemoteStreams | None = None, auto: Any = None,
                 voice_engines: Sequence[VoiceEngine] = ()) -> None:
        """`auto`: what `--model auto` decided (engines.auto.AutoChoice; None when the models were named), shown in
        readiness and on the page. `voice_engines` (built from `config.voice.models`): every local stream's sound
        is judged by them on the voice thread; none, and sound is neither decoded nor judged."""
        self.config = config
        self.remote = remote
        self.auto = auto
        bars = bars_for(config, list(engines), ensemble, list(voice_engines))
        check_sources(config, bars)  # a `baseline:` (or `voice_baseline:`) that does not fit is refused before anything opens
        self.hub = Hub()
        self.bus = MessageBus()
        # webhooks and MQTT first: a secret that is not set is refused before any spool or connection is opened
        self.channels = open_channels(config.alerts.webhooks, config.mqtt, config.data_dir)
        try:
            self.redis = open_redis(config)
        except BaseException:
            self.channels.close()  # releases the channels' queue locks: nothing stays held by a refused start
            raise
        self.alert_log = AlertLog(config.data_dir / ALERTS_LOG_NAME)
        self.evidence = EvidenceStore(config.data_dir / EVIDENCE_DIR, config.evidence)
        self.recorder = Recorder(self.evidence, provenance(engines, ensemble), self.bus.publish)
        self.alerts = AlertManager(self.bus.publish, config.alerts, self.evidence.layout)
        detector = detector or FaceDetector(config.detector, smallest_floor_px(engines))
        self.voices = voice_loop(config, voice_engines, self.alerts, bars.voice)
        self.scheduler = Scheduler(detector, engines, self.bus.publish,
                                   config.scheduler, config.verdict, self.alerts, ensemble, bars,
                                   voices=self.voices, rule=config.voice.rule)
        self.baselines = CameraBaselines(config, bars, self.scheduler, self.voices)
        self._unsubscribe = [*wire(self.bus, alerts=self.alerts, recorder=self.recorder, alert_log=self.alert_log,
                                   hub=self.hub, redis=self.redis, channels=self.channels),
                             *wire_baselines(self.scheduler.judge, bars, self.voices)]
        self._removal_listeners: list[Callable[[StreamSource], None]] = []
        self.store = StreamStore(config.data_dir / STREAMS_FILE) if config.persist_streams else None

    @property
    def source_id(self) -> str | None:
        """This process's id on Redis (its messages there carry it); None without Redis."""
        return self.redis.source if self.redis is not None else None

    def on_removed(self, fn: Callable[[StreamSource], None]) -> Callable[[], None]:
        """Call `fn(source)` after a stream is removed (the API, a hung-up peer). Returns the unsubscriber."""
        self._removal_listeners.append(fn)
        return lambda: self._removal_listeners.remove(fn) if fn in self._removal_listeners else None

    def refuse_if_full(self) -> None:
        """Raise StreamLimit when `max_streams` streams already run."""
        n = len(self.scheduler.streams()) + (len(self.remote.names()) if self.remote else 0)
        if n >= self.config.max_streams:
            raise StreamLimit(f"already {n} streams (max_streams is {self.config.max_streams}); remove one first")

    def names(self) -> set[str]:
        return {s.name for s in self.scheduler.sources()} | (self.remote.names() if self.remote else set())

    def statuses(self) -> dict[str, dict]:
        """Every stream's status: the local ones', then the remote ones' (as their owner reports them)."""
        local = {}
        for source in self.scheduler.sources():
            baseline = self.baselines.bars.status(source.name)
            local[source.name] = {**source.status(), **({"baseline": baseline} if baseline else {})}
        return {**(self.remote.statuses() if self.remote else {}), **local}

    def add_config(self, config: SourceConfig) -> StreamSource:
        validate_url(config.url)
        if self.remote is not None:
            return self.remote.add(config)
        source = AVLiveSource(config)
        self.add_source(source)
        return source

    def add_url(self, url: str, name: str | None = None, loop: bool = False) -> StreamSource:
        return self.add_config(SourceConfig(name=name or source_name_for(url, self.names()), url=url, loop=loop))

    def add_source(self, source: StreamSource) -> None:
        self.scheduler.add(source)
        config = getattr(source, "config", None)  # a camera or file has one; a browser's webcam has none
        given = config if isinstance(config, SourceConfig) else None
        self.baselines.attach(source.name, source.analysed_fps, given.baseline if given else None,
                              given.voice_baseline if given else None)
        self.recorder.attach(source)  # before start: its taps see the first packets
        if self.voices is not None:
            self.voices.attach(source)  # before start too: a file or camera opens its sound with its container
        # status is pushed on every state change, not only at the scheduler's next heartbeat
        source.on_state(lambda src, old, new: self.scheduler.publish_source_status(src))
        source.start()
        log.info("stream %s started (%s)", source.name, source.url)

    def set_priority(self, name: str, priority: int) -> bool:
        """A running stream's priority under load (the API); False when there is no such stream here."""
        source = next((s for s in self.scheduler.sources() if s.name == name), None)
        if source is None:
            return False
        source.priority = priority
        self.scheduler.publish_source_status(source)
        return True

    async def api_add(self, url: str, name: str | None = None, loop: bool = False,
                      priority: int = 0) -> StreamSource:
        """Add a stream sent through the API: the source policy first (auth.check_api_source), then the stream
        limit, then the address itself; remembered for the next start. Raises SourceRefused, StreamLimit,
        SourceError or ValueError, and then nothing was added."""
        if url.lower().startswith(("rtsp://", "rtsps://", "http://", "https://")):
            validate_url(url)  # a malformed address is said to be malformed (400) before any lookup
        await check_api_source(url, self.config.source_policy)  # before any look at a local path's existence
        self.refuse_if_full()
        config = SourceConfig(name=name or source_name_for(url, self.names()), url=url, loop=loop,
                              priority=priority)
        source = self.add_config(config)
        if self.store is not None:
            try:
                self.store.record_add(config)
            except OSError as exc:
                self.remove(config.name)
                raise SourceError(f"stream not added: it could not be saved to {self.store.path} ({exc})") from None
        return source

    def api_remove(self, name: str) -> bool:
        """Remove a stream through the API, and remember it (a config-file source stays removed)."""
        if not self.remove(name):
            return False
        self.baselines.forget(name)
        if self.store is not None:
            try:
                self.store.record_remove(name, {s.name for s in self.config.sources})
            except OSError:
                log.exception("stream %s removed, but the removal could not be saved to %s", name, self.store.path)
        return True

    def remove(self, name: str, announce: bool = True) -> bool:
        """Stop a stream and forget it: its open alerts end, its recordings complete, removal listeners run.
        `announce`: say it was removed on purpose (a `removed` status); a cluster node moving a camera away
        does not, since the camera goes on elsewhere."""
        if self.voices is not None:
            self.voices.detach(name)  # first: no voice window of it is judged (or alerted on) after this
        source = self.scheduler.remove(name)
        if source is None:
            return self.remote.remove(name) if self.remote is not None else False
        source.stop()
        self.recorder.detach(name)
        self.baselines.stream_removed(name)
        if announce:
            self.bus.publish(Status(name, state=SourceState.STOPPED.value, removed=True))
        for fn in list(self._removal_listeners):
            try:
                fn(source)
            except Exception:
                log.exception("removal listener failed for stream %s", name)
        return True

    def start(self) -> None:
        """The bus, the config file's sources (less those removed through the API), then the scheduler. The API's
        own sources come back in `restore`, which checks them against today's source policy."""
        self.channels.start()
        if self.redis is not None:
            self.redis.start()
        if self.remote is not None:
            self.remote.start(self.hub.publish_threadsafe, self.source_id)
        removed = self.store.removed | set(self.store.added) if self.store is not None else set()
        for sc in self.config.sources:
            if sc.name in removed:
                log.info("stream %s: not started (removed or replaced through the API, see %s)", sc.name,
                         self.store.path if self.store else "")
                continue
            self.add_config(sc)
        self.scheduler.start()
        if self.voices is not None:
            self.voices.start()

    async def restore(self) -> None:
        """Start the streams added through the API before the last restart. Each is checked against the source
        policy again (it may have changed); one refused, or no longer valid, is logged and skipped."""
        if self.store is None:
            return
        for sc in list(self.store.added.values()):
            try:
                await check_api_source(sc.url, self.config.source_policy)
                self.add_config(sc)
            except (SourceError, ValueError) as exc:
                log.error("stream %s from %s not restored: %s", sc.name, self.store.path, exc)

    async def stop(self) -> None:
        await self.baselines.close()  # learning sessions end unfitted
        if self.voices is not None:  # before the scheduler: its judge's close ends the voice alerts too
            await asyncio.get_running_loop().run_in_executor(None, self.voices.stop)
        self.scheduler.stop()  # ends open alerts, which still go out through the bus below
        for source in self.scheduler.sources():
            source.stop()
        self.recorder.close()  # completes open recordings, whose end messages still go out through the bus
        self.evidence.close()
        loop = asyncio.get_running_loop()
        if self.remote is not None:
            await loop.run_in_executor(None, self.remote.close)
        if self.redis is not None:
            await loop.run_in_executor(None, self.redis.close)  # undelivered alerts stay in its spool
        await loop.run_in_executor(None, self.channels.close)  # likewise
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self.alert_log.close()


def voice_loop(config: ServeConfig, engines: Sequence[VoiceEngine], alerts: AlertManager,
               bars: CameraBars | None = None) -> VoiceLoop | None:
    """The voice path when there are voice engines (its modules, and silero, load only then), else None; `bars`:
    each stream's voice bar."""
    if not engines:
        return None
    from stream.live.voices.live import VoiceLoop

    return VoiceLoop(engines, config.voice, alerts, bars=bars)


def open_redis(config: ServeConfig):
    """The bus's Redis edge with `--redis` (redis-py imported only then), else None."""
    if not config.redis:
        return None
    from stream.live.bus.redis_bus import RedisBus, open_credentials

    credentials = open_credentials(config.redis_auth)  # an unset variable is refused before the spool opens
    return RedisBus(config.redis, data_dir=config.data_dir, namespace=config.redis_namespace,
                    credentials=credentials, tls=config.redis_auth)
