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

With a `StateStore` (`dfstream cluster head --redis`, state.py) its table lives in Redis too, rewritten after
every change, and the actor is restartable: when the head is lost, Ray (its GCS fault tolerant in the same Redis)
restarts the director on the new head, which reads the table back before it does anything, adopts the node
workers still running (membership.py) and so changes nothing that runs. Until the table is read, the API refuses
with the reason and no round runs: a director that forgot its cameras would stop them on their nodes. Without a
store the table is in memory only, and losing the head loses the cluster.
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
from stream.cluster.state import DirectorState, StateStore

log = logging.getLogger(__name__)

UNPLACED = "unplaced"
STARTING = "starting"
# A camera never placed waits this long for nodes still loading their engines, so a cluster starting up spreads
# its cameras over every node instead of piling them on the first one ready; longer delays a first start.
JOIN_GRACE_S = 60.0
CALL_TIMEOUT_S = 10.0  # a start/stop call on a node worker slower than this is given up (retried next round)
PING_TIMEOUT_S = 10.0  # ensure_director: a director that does not answer this fast is asked again...
FIND_TIMEOUT_S = 120.0  # ...for this long (a head coming back: its GCS loads, then Ray restarts the director)


class StateUnavailable(RuntimeError):
    """The director has not read its table from Redis yet: it refuses every change until it has."""


class Director:
    def __init__(self, store: dict[str, str] | None = None) -> None:
        """`store`: a StateStore's fields (url, name), or None for a table in memory only."""
        self.store = StateStore(**store) if store else None
        self._state: DirectorState | None = None
        self._loaded = self.store is None  # the table is what it should be (read back, or nothing to read)
        self.load_error: str | None = None
        self.started = time.time()
        self.restored = 0  # cameras read back from Redis when this director started
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
        self._require_table()
        if self.pipeline is not None:
            if self.pipeline != pipeline:
                raise ValueError("this cluster already runs another pipeline (models, policies or Redis differ); "
                                 "stop the cluster to change it (with `cluster head --redis`, start the head "
                                 "again with --forget-state)")
            return False
        self._set_pipeline(pipeline)
        self.persist()
        return True

    async def add(self, camera: dict[str, Any]) -> bool:
        """Ask for `camera` (a SourceConfig as JSON) to run somewhere; False when it is already there, with the
        same address (a restarted gateway adding its config again). ValueError for a name taken by another."""
        from stream.live.sources.live import SourceConfig

        self._ensure_loop()
        self._require_table()
        if not self.table.add(SourceConfig.model_validate(camera).model_dump(mode="json")):
            return False
        self.persist()
        async with self._guard():
            await self._place()
            self.persist()
        return True

    async def remove(self, name: str) -> bool:
        """Stop `name` wherever it runs and forget it; False when there is no such camera."""
        self._require_table()
        async with self._guard():
            existed, nid = self.table.remove(name)
            if not existed:
                return False
            self.persist()
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
        self._require_table()
        self.members.drained.add(node_name)
        async with self._guard():
            node = self.members.by_name(node_name)
            if node is None:
                return {}
            node.draining = True
            moving = self.table.on_node(node.id)
            await asyncio.gather(*(self._call(node, "stop", c, False) for c in moving))
            for c in self.table.take_node(node.id):
                self._event("drained", c, node.id, node.name)
            await self._place()
            moved = {c: self.table.assigned.get(c) for c in moving}
            self.persist()
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
                "events": self.events[-200:], "director": self._about()}

    def _about(self) -> dict[str, Any]:
        """Where the director's table lives and since when this director runs (a head loss restarts it)."""
        return {"started": self.started, "state": self.store.redacted + " " + self.store.key if self.store else
                "memory (a head loss loses the cluster: start the head with --redis)",
                "loaded": self._loaded, "load_error": self.load_error, "restored_cameras": self.restored}

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
                if self.restore():
                    async with self._guard():
                        await self._reconcile()
                        self.persist()
            except Exception:  # one bad round must not end the director
                log.exception("director: reconcile failed")
            await asyncio.sleep(RECONCILE_S)

    async def _reconcile(self) -> None:
        dead, gone = self.members.survey(self.pipeline)
        for node in dead:
            self._lost(node.id, node.name, node.source)
        for nid, name, source in gone:  # remembered from the table, not back after a head loss
            self._lost(nid, name, source)
        known = set(self.members.nodes) | set(self.members.remembered)
        for nid in set(self.table.assigned.values()) - known:  # an owner nobody knows: its cameras move
            self._lost(nid, nid, None)
        await asyncio.gather(*(self._check(n) for n in list(self.members.nodes.values()) if n.ready))
        await self._place()
        self._announce_unplaced()
        if self._reaper is not None:
            self._reaper.step()

    # -- the table in Redis (state.py) ----------------------------------------------------------------------

    def restore(self) -> bool:
        """Read the table back once (True from then on); False while Redis cannot be read (retried each
        round, and every change is refused meanwhile)."""
        if self._loaded:
            return True
        from stream.live.bus.redis_bus import UNREACHABLE

        assert self.store is not None
        try:
            self._state = self._state or DirectorState(self.store)
            doc = self._state.load()
        except (*UNREACHABLE, ValueError) as exc:
            if self.load_error is None:
                log.error("director: cannot read its table from %s (%s); retrying", self.store.redacted, exc)
            self.load_error = f"{type(exc).__name__}: {exc}"
            return False
        if doc is not None:
            self.table.restore(doc.get("table", {}))
            self.members.restore(doc.get("members", {}))
            if doc.get("pipeline") is not None:
                self._set_pipeline(doc["pipeline"])
            if self._reaper is not None:
                self._reaper.lost_sources.update(doc.get("lost_sources", {}))
            self.restored = len(self.table.cameras)
            log.warning("director: table read back from %s: %d camera(s), %d node(s) to adopt", self.store.redacted,
                        self.restored, len(self.members.remembered))
        self._loaded, self.load_error = True, None
        return True

    def _require_table(self) -> None:
        if not self.restore():
            raise StateUnavailable(f"the director has not read its table from Redis yet ({self.load_error}); "
                                   "nothing was changed: try again once Redis answers")

    def persist(self) -> None:
        """Write the table if it changed; a failure is logged, and the next round writes it again."""
        if self._state is None or not self._loaded:
            return
        from stream.live.bus.redis_bus import UNREACHABLE

        doc = {"pipeline": self.pipeline, "table": self.table.snapshot(), "members": self.members.snapshot(),
               "lost_sources": dict(self._reaper.lost_sources) if self._reaper else {}}
        try:
            self._state.save(doc)
        except UNREACHABLE as exc:
            log.warning("director: its table could not be written to Redis (%s); a head lost now would lose the "
                        "changes since the last write", exc)

    def _set_pipeline(self, pipeline: dict[str, Any]) -> None:
        from stream.cluster.pipeline import Pipeline
        from stream.config.paths import default_data_dir

        self._bus, self._reaper = redis_side(Pipeline.model_validate(pipeline).serve, default_data_dir() / "director")
        self.pipeline = pipeline

    async def _check(self, node: Node) -> None:
        """One node's report against the assignment: one owner per camera, and every camera of its running."""
        if not await self.members.poll(node):
            self._lost(node.id, node.name, node.source)
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
            self._event("placed", camera, nid, self.members.nodes[nid].name)
        await asyncio.gather(*(self._call(self.members.nodes[nid], "start", self.table.cameras[c])
                               for c, nid in placed.items()))

    async def _call(self, node: Node, method: str, *args: Any) -> Any:
        try:
            return await asyncio.wait_for(getattr(node.actor, method).remote(*args), CALL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a lost node is handled by the next round; others are retried
            log.warning("director: %s on node %s failed: %s", method, node.name, exc)
            return None

    def _lost(self, nid: str, name: str, source: str | None) -> None:
        """A node is gone: its cameras wait to be placed again, and the reaper ends its open alerts."""
        moving = self.table.take_node(nid)
        for c in moving:
            self._event("lost", c, nid, name)
        if self._reaper is not None:
            self._reaper.lost(source)
        log.warning("director: %d camera(s) of node %s to move", len(moving), name)

    def _event(self, what: str, camera: str, nid: str, name: str) -> None:
        self.events.append({"event": what, "camera": camera, "node": nid, "node_name": name, "time": time.time()})
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


def ensure_director(store: StateStore | None = None, timeout_s: float = FIND_TIMEOUT_S) -> Any:
    """The cluster's director, created on the head if it is not there yet (one per cluster: a named, detached
    actor; Ray refuses a second of the same name), once it answers. With a `store` it is restartable: Ray brings
    it back on a new head and it reads its table again. A director left from a lost head may be dead or
    restarting for a few seconds after the head comes back (until the GCS declares the old head dead): it is
    asked again until `timeout_s`. Call after `ray.init`."""
    actor = ray.remote(Director).options(
        name=DIRECTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0,
        max_restarts=-1 if store else 0, max_concurrency=100, resources={"node:__internal_head__": 0.001})
    args = {"url": store.url, "name": store.name} if store else None
    return _answering(lambda: actor.remote(args), timeout_s)


def find_director(timeout_s: float = FIND_TIMEOUT_S) -> Any:
    """The running director (the head creates it), once it answers; asked again until `timeout_s` (a head
    coming back). Call after `ray.init`."""
    return _answering(lambda: ray.get_actor(DIRECTOR_NAME, namespace=NAMESPACE), timeout_s)


def _answering(get: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            director = get()
            ray.get(director.ping.remote(), timeout=PING_TIMEOUT_S)
            return director
        except (ValueError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster's director did not answer within {timeout_s:.0f} s: "
                                   f"{type(exc).__name__}: {exc}") from None
            time.sleep(1.0)
