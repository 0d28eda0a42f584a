"""The cluster's named settings: Ray names, health checks, the director's pace, and `ray start`'s arguments.

Kept apart from the actors so the CLI can build `ray start` command lines without importing Ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

NAMESPACE = "dfstream"  # Ray namespace of the director and the node workers
DIRECTOR_NAME = "director"
RESOURCE = "dfstream_camera"  # custom resource: cameras a node may hold
NODE_PREFIX = "dfstream-"  # Ray node names given by `dfstream cluster worker` (a drain finds its node by name)
DEFAULT_PORT = 6380


@dataclass(frozen=True)
class HealthChecks:
    """How fast the head notices a lost node: it pings each raylet every `period_ms` and declares it dead after
    `failure_threshold` pings unanswered within `timeout_ms`, so about period x threshold (~2 s here, ~3 s with
    the report poll on top). Ray's defaults (3 s x 5 with a 10 s timeout) take ~15-30 s, too slow for a 10 s
    failover target; shorter still would declare a node dead during a GC pause or a loaded machine's stall."""

    period_ms: int = 500
    timeout_ms: int = 500
    failure_threshold: int = 4

    def system_config(self) -> dict[str, int]:
        return {"health_check_period_ms": self.period_ms, "health_check_timeout_ms": self.timeout_ms,
                "health_check_failure_threshold": self.failure_threshold}


HEALTH = HealthChecks()


@dataclass(frozen=True)
class HeadLoss:
    """How long a cluster waits for a lost head to come back (with its state in Redis, state.py). Every raylet
    and Ray process (node workers, the gateway's driver) retries the GCS for `reconnect_s`, then exits:
    workers leave, and a gateway attached as a driver stops. Ray's default, 60 s, is shorter than a machine's
    reboot; 300 s covers a head restarted by systemd or a rebooted head machine. Longer keeps a cluster whose
    head never returns running headless for longer (cameras still flow, but nothing is placed or failed over)."""

    reconnect_s: int = 300
    # `ray start --head` is tried this often: on a loaded machine it can miss Ray's fixed 30 s for its raylet to
    # register (seen when a head comes back among busy workers). More only delays reporting a head that cannot start.
    start_attempts: int = 3

    def env(self) -> dict[str, str]:
        """Set for every Ray process dfstream starts (nodes, the gateway's driver): Ray reads it at start."""
        return {"RAY_gcs_rpc_server_reconnect_timeout_s": str(self.reconnect_s)}


HEAD_LOSS = HeadLoss()
HEAD_PING_S = 5.0  # the head command asks the director this often (a director Ray restarted resumes its rounds)
FAILOVER_TARGET_S = 10.0  # overlays flowing again for every moved camera within this long of a node's death
WORKER_LOST_WITHIN_S = 30.0  # alerts open on a lost node are ended within this long
RECONCILE_S = 0.5  # the director's pace: placement, node reports and the alert stream are looked at this often
REPORT_TIMEOUT_S = 2.0  # a node worker's report slower than this counts as a miss...
REPORT_MISSES = 3  # ...and this many in a row lose the node's cameras (a hung worker on a live node)
UNPLACED_STATUS_S = 2.0  # an unplaced camera's status is re-published this often (late pages see it)
DRAIN_TIMEOUT_S = 30.0  # longest a SIGTERMed worker waits for its cameras to move before it leaves anyway
STOP_GRACE_S = 10.0  # after SIGTERM, Ray's processes get this long before SIGKILL


def start_args(*, head: bool, port: int | None = None, address: str | None = None, host: str | None = None,
               cameras: int = 0, node_name: str | None = None, num_cpus: int | None = None,
               object_store_bytes: int | None = None, extra_ports: dict[str, int] | None = None,
               redis_args: list[str] | None = None) -> list[str]:
    """`ray start --block` with the documented settings. The dashboard is off (nothing here uses it, and it
    would be one more open port); usage statistics are never sent. `redis_args` (a head whose GCS is kept in
    Redis: `StateStore.ray_args`, possibly empty) are its Redis credentials."""
    args = ["start", "--block", "--disable-usage-stats", "--resources", json.dumps({RESOURCE: cameras} if cameras else {})]
    if head:
        args += ["--head", "--include-dashboard=false", "--port", str(port or DEFAULT_PORT),
                 "--system-config", json.dumps(HEALTH.system_config()), *(redis_args or [])]
    else:
        if not address:
            raise ValueError("a worker needs the head's --address HOST:PORT")
        args += ["--address", address]
    if host:
        args += ["--node-ip-address", host]
    if node_name:
        args += ["--node-name", node_name]
    if num_cpus is not None:
        args += ["--num-cpus", str(num_cpus)]
    if object_store_bytes is not None:
        args += ["--object-store-memory", str(object_store_bytes)]
    for flag, value in (extra_ports or {}).items():
        args += [flag, str(value)]
    return args
