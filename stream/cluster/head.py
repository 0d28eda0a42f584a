"""`dfstream cluster head`: a Ray head with the documented health checks, and the director on it.

By default the head holds no cameras (`--cameras 0`), so the machine that must not be lost runs only the
control plane. It stays in the foreground until SIGTERM (or Ctrl-C), then stops its Ray processes.

With `--redis` the head can be lost (state.py): Ray's GCS keeps its tables in that Redis and the director its
table, so the same command started again resumes the cluster: the workers reconnect, the director comes back
with its cameras and adopts the node workers that kept them running. The head asks the director every
`HEAD_PING_S`, which also restarts its rounds after Ray restarted it.
"""

from __future__ import annotations

import logging
import signal
import threading

from stream.cluster.node_process import RayNode, forget_stale_address, free_port
from stream.cluster.settings import HEAD_PING_S, NAMESPACE, start_args
from stream.cluster.state import StateStore

log = logging.getLogger(__name__)


def run(port: int, host: str | None, cameras: int, num_cpus: int | None, object_store_bytes: int | None,
        store: StateStore | None = None) -> int:
    import ray

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ip = host or ray.util.get_node_ip_address()
    if store is not None and forget_stale_address(ip, port):
        print(f"dfstream cluster head: the head at {ip}:{port} is gone; resuming it from {store.redacted}", flush=True)
    # Ray Client's port is fixed (10001) by default; dfstream never uses it, so any free one will do and two
    # clusters on one machine (tests) never collide
    node = RayNode(start_args(head=True, port=port, host=host, cameras=cameras, num_cpus=num_cpus,
                              object_store_bytes=object_store_bytes,
                              extra_ports={"--ray-client-server-port": free_port()},
                              redis_args=store.ray_args() if store else None),
                   env=store.ray_env() if store else None).start()
    try:
        node.wait_for_port(ip, port)
        from stream.cluster.director import ensure_director

        ray.init(address=f"{ip}:{port}", namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        director = ensure_director(store)
        for sig in (signal.SIGTERM, signal.SIGINT):  # ray.init installs its own handlers
            signal.signal(sig, lambda *_: stop.set())
        kept = (f"state in {store.redacted} as {store.name!r}: restart this command after a loss" if store
                else "state in memory: a head loss loses the cluster (--redis keeps it)")
        print(f"dfstream cluster head: address {ip}:{port} (Ray process group {node.pgid}); {kept}; "
              f"workers join with: dfstream cluster worker --address {ip}:{port} --cameras N", flush=True)
        while not stop.wait(HEAD_PING_S):
            if not node.alive():
                print("dfstream cluster head: Ray exited", flush=True)
                return 1
            try:
                ray.get(director.ping.remote(), timeout=HEAD_PING_S)
            except Exception as exc:  # noqa: BLE001 - told, and asked again; Ray restarts a director with a store
                log.warning("the director did not answer: %s", exc)
        return 0
    finally:
        if ray.is_initialized():
            ray.shutdown()
        node.stop()
