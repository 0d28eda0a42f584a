"""The director: one named, detached actor on the head that owns which camera runs where.

One writer for the assignment is what gives each camera exactly one owner: a camera is started on a node only
after the director recorded it there, and taken off its node (stopped, or the node declared lost) before it is
placed anywhere else. The actor is the API (the gateway and the CLI call it) and the loop; its jobs are in their
own modules: the nodes (membership.py), the cameras and their owners (placement.py's `CameraTable` and `place`),
and the alert reaper (reaper.py). Every `RECONCILE_S` it
* surveys the nodes (a worker on each new one; a dead one is lost) and polls each ready worker's report (a miss
  too many, or a dead worker, loses the node), correcting any difference between a report and the assignment;
* places cameras without an owner, and re-publishes `unplaced` for those that do not fit;
* lets the reaper end every alert still open from a lost node's bus with reason "worker-lost".

Its state is in memory: losing the head loses the cluster (Ray's own head is a single point as well).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import ray

from stream.cluster.membership import Membership, Node
from stream.cluster.placement import CameraTable, place
from stream.cluster.reaper import AlertReaper
from stream.cluster.settings import DIRECTOR_NAME, NAMESPACE, RECONCILE_S, UNPLACED_STATUS_S

log = logging.getLogger(__name__)

UNPLACED = "unplaced"
STARTING = "starting"
# A camera never placed waits this long for nodes still loading their engines, so a cluster starting up spreads
# its cameras over every node instead of piling them on the first one ready; longer delays a first start.
JOIN_GRACE_S = 60.0
CALL_TIMEOUT_S = 10.0  # a start/stop call on a node worker slower than this is given up (retried next round)


class Director:
    def __init__(self) -> None:
        self.pipeline: dict[str, Any] | None = None
        self.table = CameraTable(UNPLACED_STATUS_S)
        self.members = Membership()
        self.events: list[dict[str, Any]] = []  # placements and losses, for status and the benchmark
        self._bus: Any = None  # the director's RedisBus: unplaced status and worker-lost ends
        self._reaper: AlertReaper | None = None
        self._loop_task: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None

    # -- the API (the gateway, the CLI) ---------------------------------------------------------------------

    async def ping(self) -> bool:
        self._ensure_loop()
        return True

    async def configure(self, pipeline: dict[str, Any]) -> bool:
        """Set what every node runs; True the first time. A different pipeline later is refused (ValueError):
        restart the cluster to change models or policies."""
        self._ensure_loop()
        if self.pipeline is not None:
            if self.pipeline != pipeline:
                raise ValueError("this cluster already runs another pipeline (models, policies or Redis differ); "
                                 "stop the cluster to change it")
            return False
        from stream.cluster.pipeline import Pipeline
        from stream.config.paths import default_data_dir

        self._bus, self._reaper = redis_side(Pipeline.model_validate(pipeline).serve, default_data_dir() / "director")
        self.pipeline = pipeline
        return True

    async def add(self, camera: dict[str, Any]) -> bool:
        """Ask for `camera` (a SourceConfig as JSON) to run somewhere; False when it is already there, with the
        same address (a restarted gateway adding its config again). ValueError for a name taken by another."""
        from stream.live.sources.live import SourceConfig

        self._ensure_loop()
        if not self.table.add(SourceConfig.model_validate(camera).model_dump(mode="json")):
            return False
        async with self._guard():
            await self._place()
        return True

    async def remove(self, name: str) -> bool:
        """Stop `name` wherever it runs and forget it; False when there is no such camera."""
        async with self._guard():
            existed, nid = self.table.remove(name)
            if not existed:
                return False
            node = self.members.nodes.get(nid or "")
            if node is not None:
                await self._call(node, "stop", name, True)
            elif self._bus is not None:  # unplaced: nobody else will say it is gone
                from stream.messages import Status

                self._bus.publish(Status(name, state="stopped", removed=True).to_message())
        return True

    async def drain(self, node_name: str, timeout_s: float = 30.0) -> dict[str, str | None]:
        """Move every camera off the node named `node_name` (a worker leaving on SIGTERM): stop each there, then
        place it elsewhere; camera -> its new node id (None: no room anywhere, so now unplaced). The node gets no
        cameras again."""
        self._ensure_loop()
        self.members.drained.add(node_name)
        async with self._guard():
            node = self.members.by_name(node_name)
            if node is None:
                return {}
            node.draining = True
            moving = self.table.on_node(node.id)
            await asyncio.gather(*(self._call(node, "stop", c, False) for c in moving))
            for c in self.table.take_node(node.id):
                self._event("drained", c, node)
            await self._place()
            moved = {c: self.table.assigned.get(c) for c in moving}
        try:
            await asyncio.wait_for(node.actor.close.remote(), timeout_s)  # flush its alerts' ends to Redis
        except Exception as exc:  # noqa: BLE001 - it is leaving anyway; its alerts end as worker-lost
            log.warning("node %s did not close cleanly: %s", node.name, exc)
        return moved

    async def status(self) -> dict[str, Any]:
        """Nodes (capacity, use, memory), and each camera's node, state and last overlay age."""
        now = time.time()
        nodes = [{"id": n.id, "name": n.name, "address": n.address, "capacity": n.capacity,
                  "cameras": len(self.table.on_node(n.id)), "ready": n.ready, "draining": n.draining,
                  "rss_bytes": n.report.get("rss_bytes"), "pid": n.pid} for n in self.members.nodes.values()]
        cameras = {}
        for name, cam in self.table.cameras.items():
            node = self.members.nodes.get(self.table.assigned.get(name, ""))
            seen = (node.report.get("cameras", {}).get(name) if node else None) or {}
            last = seen.get("last_overlay")
            cameras[name] = {"url": _redacted(cam["url"]), "node": node.id if node else None,
                             "node_name": node.name if node else None,
                             "state": seen.get("state", STARTING) if node else UNPLACED,
                             "last_overlay_age_s": round(now - last, 2) if last else None}
        return {"configured": self.pipeline is not None, "nodes": nodes, "cameras": cameras,
                "events": self.events[-200:]}

    # -- the loop -------------------------------------------------------------------------------------------

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._lock = self._lock or asyncio.Lock()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    def _guard(self) -> asyncio.Lock:
        self._lock = self._lock or asyncio.Lock()
        return self._lock

    async def _run(self) -> None:
        while True:
            try:
                async with self._guard():
                    await self._reconcile()
            except Exception:  # one bad round must not end the director
                log.exception("director: reconcile failed")
            await asyncio.sleep(RECONCILE_S)

    async def _reconcile(self) -> None:
        for node in self.members.survey(self.pipeline):
            self._lost(node)
        await asyncio.gather(*(self._check(n) for n in list(self.members.nodes.values()) if n.ready))
        await self._place()
        self._announce_unplaced()
        if self._reaper is not None:
            self._reaper.step()

    async def _check(self, node: Node) -> None:
        """One node's report against the assignment: one owner per camera, and every camera of its running."""
        if not await self.members.poll(node):
            self._lost(node)
            return
        running = set(node.report.get("cameras", {}))
        mine = set(self.table.on_node(node.id))
        for c in running - mine:  # not (or no longer) its camera: one owner only
            await self._call(node, "stop", c, c not in self.table.cameras)
        for c in mine - running:  # its camera, not running (a start that failed or was lost): again
            await self._call(node, "start", self.table.cameras[c])

    async def _place(self) -> None:
        waiting = self.table.waiting(nodes_loading=self.members.loading(JOIN_GRACE_S))
        placed = place(waiting, self.members.capacity(), self.table.assigned)
        self.table.assign(placed)
        for camera, nid in placed.items():
            self._event("placed", camera, self.members.nodes[nid])
        await asyncio.gather(*(self._call(self.members.nodes[nid], "start", self.table.cameras[c])
                               for c, nid in placed.items()))

    async def _call(self, node: Node, method: str, *args: Any) -> Any:
        try:
            return await asyncio.wait_for(getattr(node.actor, method).remote(*args), CALL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a lost node is handled by the next round; others are retried
            log.warning("director: %s on node %s failed: %s", method, node.name, exc)
            return None

    def _lost(self, node: Node) -> None:
        """A node is gone: its cameras wait to be placed again, and the reaper ends its open alerts."""
        moving = self.table.take_node(node.id)
        for c in moving:
            self._event("lost", c, node)
        if self._reaper is not None:
            self._reaper.lost(node.source)
        log.warning("director: %d camera(s) of node %s to move", len(moving), node.name)

    def _event(self, what: str, camera: str, node: Node) -> None:
        self.events.append({"event": what, "camera": camera, "node": node.id, "node_name": node.name,
                            "time": time.time()})
        del self.events[:-1000]

    def _announce_unplaced(self) -> None:
        if self._bus is None:
            return
        from stream.messages import Status

        for c in self.table.unplaced_due(time.monotonic()):
            self._bus.publish(Status(c, state=UNPLACED).to_message())


def redis_side(serve: dict[str, Any], data_dir: Path) -> tuple[Any, AlertReaper]:
    """The director's Redis bus (started) and its alert reaper, both in the pipeline's `redis_namespace`: the one
    the nodes publish under and the gateway reads, so a lost node's alerts are found and ended where they are."""
    from stream.live.bus.redis_alerts import AlertStreamReader
    from stream.live.bus.redis_bus import RedisBus, connect

    url, namespace = serve["redis"], serve["redis_namespace"]
    bus = RedisBus(url, data_dir=data_dir, source="director", namespace=namespace)
    bus.start()
    reader = AlertStreamReader(connect(url, client_name="dfstream-director"), namespace)
    return bus, AlertReaper(reader, bus.publish)


def _redacted(url: str) -> str:
    from stream.live.sources.urls import redact

    return redact(url)


def ensure_director() -> Any:
    """The cluster's director, created on the head if it is not there yet (one per cluster: a named, detached
    actor; Ray refuses a second of the same name). Call after `ray.init`."""
    actor = ray.remote(Director).options(
        name=DIRECTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0,
        max_restarts=0, max_concurrency=100, resources={"node:__internal_head__": 0.001})
    director = actor.remote()
    ray.get(director.ping.remote())
    return director
