"""The director's nodes: which Ray nodes hold cameras, their node workers, their reports, and when one is lost.

A node with `dfstream_camera` capacity gets one node worker (node_actor.py) as soon as it joins; it is ready once
the worker has loaded its pipeline. A node is lost when Ray says it is dead (the head's health checks), when its
worker's actor died, or when it misses `REPORT_MISSES` reports in a row (a hung worker on a live node): then its
worker is killed, so it never publishes again. Node workers are detached and named after their node, so they
outlive a lost head: the director started after it (with the state of state.py) adopts each one as its node is
surveyed again, and a node it remembers that did not come back is gone (`survey`'s second answer). What a loss
means for the node's cameras and alerts is the director's to decide (director.py); this module only says which
nodes are gone.

Runs on the director's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from stream.cluster import node_actor
from stream.cluster.settings import REPORT_MISSES, REPORT_TIMEOUT_S, RESOURCE

log = logging.getLogger(__name__)


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


class Membership:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.drained: set[str] = set()  # node names told to leave (or whose pipeline failed): never used again
        # nodes a saved table named (state.py), not adopted yet: node id -> (name, bus source)
        self.remembered: dict[str, tuple[str, str | None]] = {}

    def snapshot(self) -> dict[str, Any]:
        """What survives the head: each ready node's name and bus source (the reaper needs the source of a node
        lost while the head was away), and the drained names."""
        nodes = {nid: {"name": name, "source": source} for nid, (name, source) in self.remembered.items()}
        nodes.update({n.id: {"name": n.name, "source": n.source} for n in self.nodes.values() if n.ready})
        return {"nodes": nodes, "drained": sorted(self.drained)}

    def restore(self, doc: dict[str, Any]) -> None:
        self.remembered = {nid: (v["name"], v.get("source")) for nid, v in doc.get("nodes", {}).items()}
        self.drained = set(doc.get("drained", []))

    def by_name(self, name: str) -> Node | None:
        return next((n for n in self.nodes.values() if n.name == name), None)

    def capacity(self) -> dict[str, int]:
        """Node id -> camera slots, of the nodes that may take cameras now (ready, not draining)."""
        return {n.id: n.capacity for n in self.nodes.values() if n.ready and not n.draining}

    def loading(self, grace_s: float) -> bool:
        """Whether a node that joined less than `grace_s` ago is still loading its pipeline."""
        return any(not n.ready and time.time() - n.since < grace_s for n in self.nodes.values())

    def survey(self, pipeline: dict[str, Any] | None) -> tuple[list[Node], list[tuple[str, str, str | None]]]:
        """Ray's view of the nodes: a worker spawned (or a running one adopted) on each new node with capacity,
        once there is a pipeline. Returns the nodes Ray says are dead, already forgotten here, and the remembered
        nodes that are not alive any more, as (id, name, bus source)."""
        alive = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
        dead = [self.lose(nid, "node dead") for nid in list(self.nodes) if nid not in alive]
        gone = [(nid, *self.remembered.pop(nid)) for nid in list(self.remembered) if nid not in alive]
        if pipeline is not None:
            for nid, info in alive.items():
                capacity = int(info.get("Resources", {}).get(RESOURCE, 0))
                name = info.get("NodeName") or nid
                if capacity >= 1 and nid not in self.nodes and name not in self.drained:
                    self._spawn(pipeline, nid, name, info.get("NodeManagerAddress", "?"), capacity)
        return dead, gone

    async def poll(self, node: Node) -> bool:
        """Fetch the node worker's report (its cameras and memory); False when the node is lost by it (already
        forgotten here)."""
        try:
            node.report = await asyncio.wait_for(node.actor.report.remote(), REPORT_TIMEOUT_S)
            node.misses = 0
        except asyncio.TimeoutError:
            node.misses += 1
            if node.misses >= REPORT_MISSES and self.nodes.get(node.id) is node:
                self.lose(node.id, f"{node.misses} reports missed")
                return False
        except ray.exceptions.RayActorError as exc:
            if self.nodes.get(node.id) is node:
                self.lose(node.id, f"worker died: {type(exc).__name__}")
            return False
        return True

    def lose(self, nid: str, why: str) -> Node:
        """Forget node `nid` and kill its worker (a hung worker on a live node must not keep publishing)."""
        node = self.nodes.pop(nid)
        log.warning("director: node %s lost (%s)", node.name, why)
        try:
            ray.kill(node.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        return node

    def _spawn(self, pipeline: dict[str, Any], nid: str, name: str, address: str, capacity: int) -> None:
        actor = node_actor.spawn(pipeline, nid, capacity)
        node = self.nodes[nid] = Node(nid, name, address, capacity, actor)
        log.info("director: node %s (%s) joined with %d camera slot(s); loading its pipeline", name, address, capacity)
        asyncio.get_running_loop().create_task(self._wait_ready(node))

    async def _wait_ready(self, node: Node) -> None:
        try:
            info = await node.actor.ready.remote()
        except Exception as exc:  # noqa: BLE001 - the pipeline failed to load there: the node stays unused
            log.error("director: node %s could not start its pipeline: %s", node.name, exc)
            if self.nodes.get(node.id) is node:  # not ready: it holds no cameras, so only it is forgotten
                self.lose(node.id, f"pipeline failed: {exc}")
                self.drained.add(node.name)
            return
        node.ready, node.source, node.pid = True, info.get("source"), info.get("pid")
        adopted = self.remembered.pop(node.id, None) is not None
        log.info("director: node %s %s", node.name, "adopted, with the cameras it runs" if adopted else "ready")
