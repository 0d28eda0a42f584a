"""Where cameras go: a pure rule, so it is tested without Ray.

Spread, not pack: each camera goes to the node with the most free slots (ties: the lowest load fraction, then
the node id, so the result is deterministic). Spreading keeps the cameras a lost node takes with it few, and
leaves headroom on every node for a failover. A camera already placed never moves here; only cameras without an
owner are placed, so a running camera is never interrupted by someone else's arrival.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


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
