"""The director: one named, detached actor on the head that owns which camera runs where.

One writer for the assignment is what gives each camera exactly one owner: a camera is started on a node only
after the director recorded it there, and taken off its node (stopped, or the node declared lost) before it is
placed anywhere else. Every `RECONCILE_S` it
* reads the nodes from Ray (the head's health checks decide when one is dead) and creates a node worker on each
  new node with `dfstream_camera` capacity;
* polls each node worker's report (a worker whose actor died, or that misses `REPORT_MISSES` reports, is lost
  like a dead node), and corrects any difference between the report and the assignment;
* places cameras without an owner (`placement.place`), and re-publishes `unplaced` for those that do not fit;
* reads the Redis alert stream, and ends every alert still open from a lost node's bus with reason
  "worker-lost" (the same key on every retry, so Redis's idempotency claim keeps it to one message).

Its state is in memory: losing the head loses the cluster (Ray's own head is a single point as well).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from stream.cluster import node_actor
from stream.cluster.placement import place
from stream.cluster.settings import (DIRECTOR_NAME, NAMESPACE, RECONCILE_S, REPORT_MISSES, REPORT_TIMEOUT_S,
                                     RESOURCE, UNPLACED_STATUS_S)

log = logging.getLogger(__name__)

UNPLACED = "unplaced"
STARTING = "starting"
WORKER_LOST = "worker-lost"
ALERT_READ_COUNT = 1000  # alert-stream entries read per reconcile
# A camera never placed waits this long for nodes still loading their engines, so a cluster starting up spreads
# its cameras over every node instead of piling them on the first one ready; longer delays a first start.
JOIN_GRACE_S = 60.0
CALL_TIMEOUT_S = 10.0  # a start/stop call on a node worker slower than this is given up (retried next round)


@dataclass
class Node:
    id: str
    name: str
    address: str
    capacity: int
    actor: Any
    ready: bool = False
    source: str | None = None  # the node's RedisBus source id: its messages in Redis carry it
    pid: int | None = None
    draining: bool = False
    misses: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    since: float = field(default_factory=time.time)


class Director:
    def __init__(self) -> None:
        self.pipeline: dict[str, Any] | None = None
        self.cameras: dict[str, dict[str, Any]] = {}  # name -> SourceConfig JSON, in order of arrival
        self.assigned: dict[str, str] = {}  # camera -> node id
        self.nodes: dict[str, Node] = {}
        self.drained: set[str] = set()  # node names told to leave: never given a worker again
        self.lost_sources: dict[str, float] = {}  # bus source id of a lost node -> when it was lost
        self.events: list[dict[str, Any]] = []  # placements and losses, for status and the benchmark
        self._ever_placed: set[str] = set()
        self._open_alerts: dict[str, dict[str, Any]] = {}  # alert id -> its latest message
        self._alerts_from = "0-0"
        self._unplaced_sent: dict[str, float] = {}
        self._bus: Any = None
        self._redis: Any = None
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
        from stream.live.bus.redis_bus import RedisBus, connect

        spec = Pipeline.model_validate(pipeline)
        url = spec.serve["redis"]
        self._redis = connect(url, client_name="dfstream-director")
        self._bus = RedisBus(url, data_dir=default_data_dir() / "director", source="director")
        self._bus.start()
        self.pipeline = pipeline
        return True

    async def add(self, camera: dict[str, Any]) -> bool:
        """Ask for `camera` (a SourceConfig as JSON) to run somewhere; False when it is already there, with the
        same address (a restarted gateway adding its config again). ValueError for a name taken by another."""
        from stream.live.sources.live import SourceConfig

        self._ensure_loop()
        config = SourceConfig.model_validate(camera).model_dump(mode="json")
        old = self.cameras.get(config["name"])
        if old is not None:
            if old["url"] != config["url"]:
                raise ValueError(f"a camera named {config['name']!r} already runs with another address")
            return False
        self.cameras[config["name"]] = config
        async with self._guard():
            await self._place()
        return True

    async def remove(self, name: str) -> bool:
        """Stop `name` wherever it runs and forget it; False when there is no such camera."""
        if self.cameras.pop(name, None) is None:
            return False
        async with self._guard():
            node = self.nodes.get(self.assigned.pop(name, ""))
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
        self.drained.add(node_name)
        async with self._guard():
            node = next((n for n in self.nodes.values() if n.name == node_name), None)
            if node is None:
                return {}
            node.draining = True
            moving = [c for c, n in self.assigned.items() if n == node.id]
            await asyncio.gather(*(self._call(node, "stop", c, False) for c in moving))
            for c in moving:
                self.assigned.pop(c, None)
                self._event("drained", c, node)
            await self._place()
            moved = {c: self.assigned.get(c) for c in moving}
        try:
            await asyncio.wait_for(node.actor.close.remote(), timeout_s)  # flush its alerts' ends to Redis
        except Exception as exc:  # noqa: BLE001 - it is leaving anyway; its alerts end as worker-lost
            log.warning("node %s did not close cleanly: %s", node.name, exc)
        return moved

    async def status(self) -> dict[str, Any]:
        """Nodes (capacity, use, memory), and each camera's node, state and last overlay age."""
        now = time.time()
        used: dict[str, int] = {}
        for n in self.assigned.values():
            used[n] = used.get(n, 0) + 1
        nodes = [{"id": n.id, "name": n.name, "address": n.address, "capacity": n.capacity,
                  "cameras": used.get(n.id, 0), "ready": n.ready, "draining": n.draining,
                  "rss_bytes": n.report.get("rss_bytes"), "pid": n.pid} for n in self.nodes.values()]
        cameras = {}
        for name, cam in self.cameras.items():
            node = self.nodes.get(self.assigned.get(name, ""))
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
        alive = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
        for nid in [nid for nid in self.nodes if nid not in alive]:
            self._lose(nid, "node dead")
        if self.pipeline is not None:
            for nid, info in alive.items():
                capacity = int(info.get("Resources", {}).get(RESOURCE, 0))
                name = info.get("NodeName") or nid
                if capacity >= 1 and nid not in self.nodes and name not in self.drained:
                    self._spawn(nid, name, info.get("NodeManagerAddress", "?"), capacity)
        await asyncio.gather(*(self._poll(n) for n in list(self.nodes.values()) if n.ready))
        await self._place()
        self._announce_unplaced()
        self._end_lost_alerts()

    def _spawn(self, nid: str, name: str, address: str, capacity: int) -> None:
        actor = node_actor.spawn(self.pipeline, nid, capacity)
        node = self.nodes[nid] = Node(nid, name, address, capacity, actor)
        log.info("director: node %s (%s) joined with %d camera slot(s); loading its pipeline", name, address, capacity)

        async def wait_ready() -> None:
            try:
                info = await actor.ready.remote()
            except Exception as exc:  # noqa: BLE001 - the pipeline failed to load there: the node stays unused
                log.error("director: node %s could not start its pipeline: %s", name, exc)
                if self.nodes.get(nid) is node:
                    self._lose(nid, f"pipeline failed: {exc}")
                    self.drained.add(name)
                return
            node.ready, node.source, node.pid = True, info.get("source"), info.get("pid")
            log.info("director: node %s ready", name)

        asyncio.get_running_loop().create_task(wait_ready())

    async def _poll(self, node: Node) -> None:
        try:
            node.report = await asyncio.wait_for(node.actor.report.remote(), REPORT_TIMEOUT_S)
            node.misses = 0
        except asyncio.TimeoutError:
            node.misses += 1
            if node.misses >= REPORT_MISSES and self.nodes.get(node.id) is node:
                self._lose(node.id, f"{node.misses} reports missed")
            return
        except ray.exceptions.RayActorError as exc:
            if self.nodes.get(node.id) is node:
                self._lose(node.id, f"worker died: {type(exc).__name__}")
            return
        running = set(node.report.get("cameras", {}))
        mine = {c for c, n in self.assigned.items() if n == node.id}
        for c in running - mine:  # not (or no longer) its camera: one owner only
            await self._call(node, "stop", c, c not in self.cameras)
        for c in mine - running:  # its camera, not running (a start that failed or was lost): again
            await self._call(node, "start", self.cameras[c])

    async def _place(self) -> None:
        capacity = {n.id: n.capacity for n in self.nodes.values() if n.ready and not n.draining}
        waiting = [c for c in self.cameras if c not in self.assigned]
        loading = [n for n in self.nodes.values() if not n.ready and time.time() - n.since < JOIN_GRACE_S]
        if loading:  # a starting cluster spreads its cameras; a camera that ran before (moving) never waits
            waiting = [c for c in waiting if c in self._ever_placed]
        placed = place(waiting, capacity, self.assigned)
        for camera, nid in placed.items():
            self.assigned[camera] = nid
            self._ever_placed.add(camera)
            self._unplaced_sent.pop(camera, None)
            self._event("placed", camera, self.nodes[nid])
        await asyncio.gather(*(self._call(self.nodes[nid], "start", self.cameras[c]) for c, nid in placed.items()))

    async def _call(self, node: Node, method: str, *args: Any) -> Any:
        try:
            return await asyncio.wait_for(getattr(node.actor, method).remote(*args), CALL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a lost node is handled by the next round; others are retried
            log.warning("director: %s on node %s failed: %s", method, node.name, exc)
            return None

    def _lose(self, nid: str, why: str) -> None:
        node = self.nodes.pop(nid)
        moving = [c for c, n in self.assigned.items() if n == nid]
        for c in moving:
            del self.assigned[c]
            self._event("lost", c, node)
        if node.source:
            self.lost_sources[node.source] = time.time()
        log.warning("director: node %s lost (%s); %d camera(s) to move", node.name, why, len(moving))
        try:
            ray.kill(node.actor, no_restart=True)  # a hung worker on a live node must not keep publishing
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _event(self, what: str, camera: str, node: Node) -> None:
        self.events.append({"event": what, "camera": camera, "node": node.id, "node_name": node.name,
                            "time": time.time()})
        del self.events[:-1000]

    def _announce_unplaced(self) -> None:
        if self._bus is None:
            return
        from stream.messages import Status

        now = time.monotonic()
        for c in self.cameras:
            if c not in self.assigned and now - self._unplaced_sent.get(c, -1e9) >= UNPLACED_STATUS_S:
                self._unplaced_sent[c] = now
                self._bus.publish(Status(c, state=UNPLACED).to_message())

    def _end_lost_alerts(self) -> None:
        """Follow the alert stream; end what a lost node left open. Retries reuse the key (id:seq+1)."""
        if self._redis is None:
            return
        from stream.live.bus.redis_bus import UNREACHABLE, alerts_stream
        from stream.messages import Alert

        try:
            for _, entries in self._redis.xread({alerts_stream(): self._alerts_from}, count=ALERT_READ_COUNT) or []:
                for entry_id, fields in entries:
                    self._alerts_from = entry_id
                    msg = json.loads(fields[b"msg"])
                    if msg.get("event") == "end":
                        self._open_alerts.pop(msg["id"], None)
                    else:
                        self._open_alerts[msg["id"]] = msg
        except UNREACHABLE as exc:
            log.warning("director: cannot read the alert stream: %s", exc)
            return
        cutoff = time.time() - 3600  # a lost source is remembered this long: its alerts were ended long before
        self.lost_sources = {s: t for s, t in self.lost_sources.items() if t > cutoff}
        for msg in list(self._open_alerts.values()):
            if msg.get("source") in self.lost_sources:
                end = Alert(event="end", id=msg["id"], seq=int(msg["seq"]) + 1, stream=msg["stream"],
                            track=int(msg["track"]), started_at=msg["started_at"], ended_at=time.time(),
                            score_max=msg["score_max"], engines=msg.get("engines", {}),
                            evidence=msg.get("evidence", {}), reason=WORKER_LOST)
                self._bus.publish(end.to_message())


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

