"""Where cameras go: a pure rule and the director's table of cameras and owners, so both are tested without Ray.

Spread, not pack: each camera goes to the node with the most free slots (ties: the lowest load fraction, then
the node id, so the result is deterministic). Spreading keeps the cameras a lost node takes with it few, and
leaves headroom on every node for a failover. A camera already placed never moves here; only cameras without an
owner are placed, so a running camera is never interrupted by someone else's arrival.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def free_slots(capacity: Mapping[str, int], assigned: Mapping[str, str]) -> dict[str, int]:
    """node -> capacity less the cameras assigned to it (never below 0)."""
    used: dict[str, int] = {}
    for node in assigned.values():
        used[node] = used.get(node, 0) + 1
    return {node: max(0, cap - used.get(node, 0)) for node, cap in capacity.items()}


def place(cameras: Iterable[str], capacity: Mapping[str, int], assigned: Mapping[str, str]) -> dict[str, str]:
    """camera -> node for each of `cameras` that fits (in the order given); the rest stay out of the result,
    which means unplaced. `capacity` holds only the nodes that may take cameras now (alive, ready, not draining);
    `assigned` is the current assignment, whose nodes' slots are already used."""
    free = free_slots(capacity, assigned)
    placed: dict[str, str] = {}
    for camera in cameras:
        candidates = [n for n, slots in free.items() if slots > 0]
        if not candidates:
            break
        node = min(candidates, key=lambda n: (-free[n], (capacity[n] - free[n]) / capacity[n], n))
        placed[camera] = node
        free[node] -= 1
    return placed


class CameraTable:
    """The director's cameras and their owners, without Ray: which camera runs where, which wait for a node, and
    when an unplaced one's status is due again. One owner per camera: a camera is assigned to one node, and taken
    off it (`unassign`, `take_node`) before it can be placed anywhere else."""

    def __init__(self, unplaced_every_s: float) -> None:
        self.unplaced_every_s = unplaced_every_s
        self.cameras: dict[str, dict[str, Any]] = {}  # name -> SourceConfig JSON, in order of arrival
        self.assigned: dict[str, str] = {}  # camera -> node id
        self._ever_placed: set[str] = set()  # cameras that ran somewhere: moving ones never wait for a node
        self._unplaced_sent: dict[str, float] = {}  # camera -> when its unplaced status was last published

    def add(self, config: dict[str, Any]) -> bool:
        """False when the camera is already there with the same address; ValueError for a name taken by
        another address."""
        old = self.cameras.get(config["name"])
        if old is not None:
            if old["url"] != config["url"]:
                raise ValueError(f"a camera named {config['name']!r} already runs with another address")
            return False
        self.cameras[config["name"]] = config
        return True

    def remove(self, name: str) -> tuple[bool, str | None]:
        """Forget `name`: whether it existed, and the node it ran on (None: unplaced)."""
        if self.cameras.pop(name, None) is None:
            return False, None
        return True, self.assigned.pop(name, None)

    def on_node(self, node: str) -> list[str]:
        return [c for c, n in self.assigned.items() if n == node]

    def take_node(self, node: str) -> list[str]:
        """Unassign every camera of `node` (lost or drained); they wait to be placed again."""
        moving = self.on_node(node)
        for camera in moving:
            del self.assigned[camera]
        return moving

    def waiting(self, nodes_loading: bool) -> list[str]:
        """Cameras without an owner, in order of arrival. While nodes are still loading their engines only those
        that ran before wait no longer (a starting cluster spreads its cameras instead of piling them on the first
        node ready)."""
        waiting = [c for c in self.cameras if c not in self.assigned]
        return [c for c in waiting if c in self._ever_placed] if nodes_loading else waiting

    def assign(self, placed: Mapping[str, str]) -> None:
        for camera, node in placed.items():
            self.assigned[camera] = node
            self._ever_placed.add(camera)
            self._unplaced_sent.pop(camera, None)

    def snapshot(self) -> dict[str, Any]:
        """What survives the head (state.py): the cameras in order of arrival, their owners, those that ran."""
        return {"cameras": list(self.cameras.values()), "assigned": dict(self.assigned),
                "ever_placed": sorted(self._ever_placed)}

    def restore(self, doc: dict[str, Any]) -> None:
        """Take back a `snapshot`: the same cameras on the same nodes (whether those nodes live is the
        director's to find out)."""
        self.cameras = {c["name"]: c for c in doc.get("cameras", [])}
        self.assigned = {c: n for c, n in doc.get("assigned", {}).items() if c in self.cameras}
        self._ever_placed = set(doc.get("ever_placed", [])) & set(self.cameras)
        self._unplaced_sent.clear()

    def unplaced_due(self, now: float) -> list[str]:
        """Unplaced cameras whose status should be published again (late pages see it); marks them sent."""
        due = [c for c in self.cameras
               if c not in self.assigned and now - self._unplaced_sent.get(c, -1e9) >= self.unplaced_every_s]
        for camera in due:
            self._unplaced_sent[camera] = now
        return due
