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

from stream.cluster.node_process import RayNode, RayStartFailed, forget_stale_address, free_port, listening
from stream.cluster.settings import HEAD_LOSS, HEAD_PING_S, NAMESPACE, start_args
from stream.cluster.state import StateStore

log = logging.getLogger(__name__)


def run(port: int, host: str | None, cameras: int, num_cpus: int | None, object_store_bytes: int | None,
        store: StateStore | None = None) -> int:
    import ray

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ip = host or ray.util.get_node_ip_address()
    # Ray Client's port is fixed (10001) by default; dfstream never uses it, so any free one will do and two
    # clusters on one machine (tests) never collide
    args = start_args(head=True, port=port, host=host, cameras=cameras, num_cpus=num_cpus,
                      object_store_bytes=object_store_bytes, extra_ports={"--ray-client-server-port": free_port()},
                      redis_args=store.ray_args() if store else None)
    node = start_head(args, store.ray_env() if store else None, ip, port)
    try:
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


def start_head(args: list[str], env: dict[str, str] | None, ip: str, port: int) -> RayNode:
    """`ray start --head`, tried up to `HEAD_LOSS.start_attempts` times, once its node is registered. Ray's
    record of a dead head at this address is removed first (node_process.forget_stale_address)."""
    if listening(ip, port):
        raise ValueError(f"something already listens on {ip}:{port} (a head running there?); nothing was started")
    for attempt in range(1, HEAD_LOSS.start_attempts + 1):
        if forget_stale_address(ip, port):
            print(f"dfstream cluster head: the head that was at {ip}:{port} is gone; starting it again", flush=True)
        node = RayNode(args, env=env).start()
        try:
            node.wait_started(port)
            return node
        except RayStartFailed as exc:
            node.stop()
            if attempt == HEAD_LOSS.start_attempts:
                raise
            print(f"dfstream cluster head: {exc}; trying again ({attempt + 1}/{HEAD_LOSS.start_attempts})", flush=True)
    raise AssertionError("unreachable")
