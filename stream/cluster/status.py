"""`dfstream cluster status`: the director's view as a table (or JSON): nodes with capacity, use and memory;
cameras with their node, state and last overlay age."""

from __future__ import annotations

import logging
from typing import Any

from stream.cluster.settings import DIRECTOR_NAME, NAMESPACE


def fetch(address: str) -> dict[str, Any]:
    import ray

    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
    try:
        director = ray.get_actor(DIRECTOR_NAME, namespace=NAMESPACE)
        return ray.get(director.status.remote(), timeout=30)
    finally:
        ray.shutdown()


def render(status: dict[str, Any]) -> str:
    lines = ["nodes:"]
    for n in status["nodes"]:
        rss = f"{n['rss_bytes'] / 2**20:.0f} MiB" if n.get("rss_bytes") else "-"
        flags = "" if n["ready"] else " (loading)"
        flags += " (draining)" if n["draining"] else ""
        lines.append(f"  {n['name']:<20} {n['address']:<16} cameras {n['cameras']}/{n['capacity']}  "
                     f"memory {rss}{flags}")
    if not status["nodes"]:
        lines.append("  none with camera capacity")
    lines.append("cameras:")
    for name, c in status["cameras"].items():
        age = f"{c['last_overlay_age_s']:.1f} s ago" if c.get("last_overlay_age_s") is not None else "-"
        lines.append(f"  {name:<24} {c['state']:<12} on {c['node_name'] or '-':<20} last overlay {age}")
    if not status["cameras"]:
        lines.append("  none")
    if not status["configured"]:
        lines.append("no gateway has configured the pipeline yet (dfstream serve --ray ... --redis ...)")
    return "\n".join(lines)
