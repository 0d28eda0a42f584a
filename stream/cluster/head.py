"""`dfstream cluster head`: a Ray head with the documented health checks, and the director on it.

By default the head holds no cameras (`--cameras 0`), so the machine that must not be lost runs only the
control plane. It stays in the foreground until SIGTERM (or Ctrl-C), then stops its Ray processes.
"""

from __future__ import annotations

import logging
import signal
import threading

from stream.cluster.node_process import RayNode, free_port
from stream.cluster.settings import NAMESPACE, start_args

log = logging.getLogger(__name__)


def run(port: int, host: str | None, cameras: int, num_cpus: int | None, object_store_bytes: int | None) -> int:
    import ray

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ip = host or ray.util.get_node_ip_address()
    # Ray Client's port is fixed (10001) by default; dfstream never uses it, so any free one will do and two
    # clusters on one machine (tests) never collide
    node = RayNode(start_args(head=True, port=port, host=host, cameras=cameras, num_cpus=num_cpus,
                              object_store_bytes=object_store_bytes,
                              extra_ports={"--ray-client-server-port": free_port()})).start()
    try:
        node.wait_for_port(ip, port)
        from stream.cluster.director import ensure_director

        ray.init(address=f"{ip}:{port}", namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        ensure_director()
        ray.shutdown()
        for sig in (signal.SIGTERM, signal.SIGINT):  # ray.init installs its own handlers
            signal.signal(sig, lambda *_: stop.set())
        print(f"dfstream cluster head: address {ip}:{port} (Ray process group {node.pgid}); "
              f"workers join with: dfstream cluster worker --address {ip}:{port} --cameras N", flush=True)
        while not stop.wait(0.5):
            if not node.alive():
                print("dfstream cluster head: Ray exited", flush=True)
                return 1
        return 0
    finally:
        node.stop()
