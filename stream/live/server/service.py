"""LiveService: owns the sources, the scheduler and the hub, and starts and stops them together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from engines.base import Engine
from engines.calibration import Ensemble
from engines.quality import smallest_floor_px

from stream.live.verdicts.alerts import AlertManager
from stream.live.bus import open_bus
from stream.config.serve import ServeConfig, source_name_for
from stream.live.verdicts.evidence import EvidenceStore
from stream.live.faces import FaceDetector
from stream.live.server.hub import Hub
from stream.live.scheduler.loop import Scheduler
from stream.live.sources import SourceState
from stream.messages import Status
from stream.live.sources.live import AVLiveSource, SourceConfig, StreamSource, validate_url

log = logging.getLogger(__name__)


class LiveService:
    def __init__(self, config: ServeConfig, engines: Sequence[Engine], detector: FaceDetector | None = None,
                 ensemble: Ensemble | None = None) -> None:
        self.config = config
        self.hub = Hub()
        self.bus = open_bus(config.redis, config.data_dir, [self.hub.publish_threadsafe])
        self.evidence = EvidenceStore(config.data_dir / "evidence", config.evidence)
        self.alerts = AlertManager(self.publish, self.evidence, config.alerts)
        detector = detector or FaceDetector(config.detector, smallest_floor_px(engines))
        self.scheduler = Scheduler(detector, engines, self.publish,
                                   config.scheduler, config.verdict, self.alerts, ensemble)
        self._removal_listeners: list[Callable[[StreamSource], None]] = []

    def on_removed(self, fn: Callable[[StreamSource], None]) -> Callable[[], None]:
        """Call `fn(source)` after a stream is removed (the API, a hung-up peer). Returns the unsubscriber."""
        self._removal_listeners.append(fn)
        return lambda: self._removal_listeners.remove(fn) if fn in self._removal_listeners else None

    def publish(self, msg: dict) -> None:
        """Every message leaves through the bus: websockets always, Redis and the alert log as configured."""
        self.bus.publish(msg)

    def names(self) -> set[str]:
        return {s.name for s in self.scheduler.sources()}

    def add_config(self, config: SourceConfig) -> StreamSource:
        validate_url(config.url)
        source = AVLiveSource(config)
        self.add_source(source)
        return source

    def add_url(self, url: str, name: str | None = None, loop: bool = False) -> StreamSource:
        return self.add_config(SourceConfig(name=name or source_name_for(url, self.names()), url=url, loop=loop))

    def add_source(self, source: StreamSource) -> None:
        self.scheduler.add(source)
        # status is pushed on every state change, not only at the scheduler's next heartbeat
        source.on_state(lambda src, old, new: self.scheduler.publish_source_status(src))
        source.start()
        log.info("stream %s started (%s)", source.name, source.url)

    def remove(self, name: str) -> bool:
        source = self.scheduler.remove(name)
        if source is None:
            return False
        source.stop()
        self.publish(Status(name, state=SourceState.STOPPED.value, removed=True).to_message())
        for fn in list(self._removal_listeners):
            try:
                fn(source)
            except Exception:
                log.exception("removal listener failed for stream %s", name)
        return True

    def start(self) -> None:
        self.bus.start()
        for sc in self.config.sources:
            self.add_config(sc)
        self.scheduler.start()

    async def stop(self) -> None:
        self.scheduler.stop()  # ends open alerts, which still go out through the bus below
        for source in self.scheduler.sources():
            source.stop()
        self.evidence.close()
        await asyncio.get_running_loop().run_in_executor(None, self.bus.close)
