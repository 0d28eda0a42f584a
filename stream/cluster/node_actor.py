"""The node worker: one actor per camera node, holding an ordinary `LiveService` for every camera placed there.

One service per node, not one per camera, keeps what makes one machine efficient: the engines load once, and
MTCNN and every engine see the frames of all the node's cameras as one batch per pass. The service publishes
through its `RedisBus` exactly as `serve --redis` does; it has no websocket clients (its hub is never bound).

The director is the only caller. `start`/`stop` are idempotent, so a repeated call after a lost reply changes
nothing. `stop` goes through `LiveService.remove` (open alerts end, recordings complete, the recorder detaches);
`removed=False` (a camera moving) does not announce the camera as removed, `removed=True` (taken away through
the API) does. The last-overlay clock of `report` and the evidence uploader (the gateway serves what it
uploads) are subscribers of the service's bus.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import ray

from stream.cluster.pipeline import Pipeline
from stream.cluster.settings import NAMESPACE, RESOURCE
from stream.messages import Overlay

log = logging.getLogger(__name__)


class NodeWorker:
    def __init__(self, pipeline: dict[str, Any], node_id: str) -> None:
        from stream.config.paths import default_data_dir
        from stream.config.serve import ServeConfig
        from stream.live.faces import FaceDetector
        from stream.live.server.service import LiveService
        from engines.quality import smallest_floor_px

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        spec = Pipeline.model_validate(pipeline)
        self.node_id = node_id
        config = ServeConfig.model_validate({**spec.serve, "sources": [], "persist_streams": False,
                                             "data_dir": default_data_dir() / f"node-{node_id[:12]}"})
        if spec.device:
            on_device = spec.device
        else:
            import torch

            on_device = "cuda" if torch.cuda.is_available() else "cpu"
        if spec.factory:
            import importlib

            module, function = spec.factory.split(":")
            engines, detector, ensemble = getattr(importlib.import_module(module), function)(config, on_device)
        else:
            from stream.live.assembly import serve_engines

            built = serve_engines(config, on_device, spec.offline)  # what `serve` runs, prepared the same way
            engines, ensemble = built.engines, built.ensemble
            detector = FaceDetector(config.detector.model_copy(update={"device": on_device}),
                                    smallest_floor_px(engines))
        self.service = LiveService(config, engines, detector, ensemble)
        self._last_overlay: dict[str, float] = {}
        self._lock = threading.Lock()
        self.service.bus.subscribe(Overlay, self._seen)
        self.uploader = _uploader(self.service)
        self.service.bus.subscribe(self.uploader.kinds, self.uploader.publish, wire=True)
        self.uploader.start()
        self.service.start()
        self.started = time.time()
        log.info("node worker on %s ready: %s", node_id[:12], ", ".join(e.name for e in engines))

    def _seen(self, overlay: Overlay) -> None:
        with self._lock:
            self._last_overlay[overlay.stream] = time.time()

    def ready(self) -> dict[str, Any]:
        """Called once the engines are loaded (Ray queues it behind __init__): the bus's source id, which tells
        this node's messages apart in Redis, and the process id (for memory figures)."""
        return {"source": self.service.source_id, "pid": os.getpid(), "node": self.node_id}

    def start(self, camera: dict[str, Any]) -> bool:
        """Run `camera` (a SourceConfig as JSON) here; True when started now, False when it already ran."""
        from stream.live.sources.live import SourceConfig

        config = SourceConfig.model_validate(camera)
        if config.name in self.service.names():
            return False
        self.service.add_config(config)
        return True

    def stop(self, name: str, removed: bool = False) -> bool:
        """Stop `name` here (its open alerts end); False when it did not run here."""
        if name not in {s.name for s in self.service.scheduler.sources()}:
            return False
        self.service.remove(name, announce=removed)
        with self._lock:
            self._last_overlay.pop(name, None)
        return True

    def close(self) -> bool:
        """Stop every camera and flush the bus (their alerts' ends reach Redis): a draining node's last call."""
        import asyncio

        asyncio.run(self.service.stop())
        self.uploader.close()  # after the service: its last alerts' evidence is uploaded (or spooled) too
        return True

    def report(self) -> dict[str, Any]:
        """Each camera's state and the time of its last overlay, and this process's resident memory."""
        with self._lock:
            last = dict(self._last_overlay)
        cameras = {s.name: {"state": s.state.value, "last_overlay": last.get(s.name)}
                   for s in self.service.scheduler.sources()}
        return {"cameras": cameras, "rss_bytes": _rss_bytes(), "time": time.time()}


def _uploader(service: Any) -> Any:
    """The node's evidence uploader (stream/live/bus/evidence_upload.py): the gateway serves what it uploads."""
    from stream.live.bus.evidence_upload import EvidenceUploader

    config = service.config
    return EvidenceUploader(config.redis, config.redis_namespace, service.evidence.root, config.evidence.shared,
                            config.data_dir, service.source_id)


def _rss_bytes() -> int | None:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def worker_name(node_id: str) -> str:
    return f"node-{node_id}"


def spawn(pipeline: dict[str, Any], node_id: str, capacity: int) -> Any:
    """The node worker of `node_id`, pinned there (never moved: a lost node's cameras are re-placed by the
    director instead), holding the node's whole camera capacity so Ray itself never puts two on one node.
    Detached and named after its node, so it outlives the director (a lost head): the one already running
    there is returned instead of a second."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor = ray.remote(NodeWorker).options(
        name=worker_name(node_id), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        num_cpus=0, resources={RESOURCE: capacity}, max_restarts=0, max_concurrency=4,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
    return actor.remote(pipeline, node_id)
