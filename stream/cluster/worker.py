"""`dfstream cluster worker`: joins the cluster with `dfstream_camera: N`, runs in the foreground, and leaves
gracefully on SIGTERM: the director first moves its cameras (stopped here, started elsewhere), then Ray stops.

Its Ray node gets a unique name (`dfstream-<hex>`), which is how the director finds the node being drained.
"""

from __future__ import annotations

import logging
import secrets
import signal
import threading

from stream.cluster.node_process import RayNode
from stream.cluster.settings import DIRECTOR_NAME, DRAIN_TIMEOUT_S, NAMESPACE, NODE_PREFIX, start_args

log = logging.getLogger(__name__)


def run(address: str, cameras: int, host: str | None, num_cpus: int | None, object_store_bytes: int | None) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    name = NODE_PREFIX + secrets.token_hex(4)
    node = RayNode(start_args(head=False, address=address, host=host, cameras=cameras, node_name=name,
                              num_cpus=num_cpus, object_store_bytes=object_store_bytes)).start()
    print(f"dfstream cluster worker: node {name} joining {address} with {cameras} camera slot(s) "
          f"(Ray process group {node.pgid})", flush=True)
    try:
        while not stop.wait(0.5):
            if not node.alive():
                print("dfstream cluster worker: Ray exited", flush=True)
                return 1
        moved = drain(address, name)
        where = ", ".join(f"{c} -> {n or 'unplaced'}" for c, n in moved.items()) or "none"
        print(f"dfstream cluster worker: {len(moved)} camera(s) moved: {where}", flush=True)
        return 0
    finally:
        node.stop()


def drain(address: str, node_name: str) -> dict[str, str | None]:
    """Ask the director to move this node's cameras; {} when it cannot be reached (then the node's loss moves
    them, only later)."""
    import ray

    try:
        # a driver attaches to some node on this machine (Ray prefers the head's); which one does not matter
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        director = ray.get_actor(DIRECTOR_NAME, namespace=NAMESPACE)
        return ray.get(director.drain.remote(node_name, DRAIN_TIMEOUT_S), timeout=DRAIN_TIMEOUT_S + 5)
    except Exception as exc:  # noqa: BLE001 - leaving regardless; the health checks catch up
        print(f"dfstream cluster worker: could not drain ({type(exc).__name__}: {exc}); leaving anyway", flush=True)
        return {}
    finally:
        if ray.is_initialized():
            ray.shutdown()
