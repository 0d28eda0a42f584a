"""`dfstream cluster head|worker|status`: run cameras on many machines (Ray underneath; see stream/cluster).

`head` and `worker` wrap `ray start` with the documented settings and stay in the foreground until SIGTERM;
a gateway is `dfstream serve --ray HOST:PORT --redis redis://...`. Ray's ports must never be reachable from
an untrusted network: anyone who reaches them can run code on every node.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from stream.cli.common import EXIT_OK

MIB = 2**20


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from stream.cluster.settings import DEFAULT_PORT
    from stream.cluster.state import DEFAULT_CLUSTER_NAME

    p = subparsers.add_parser("cluster", help="run cameras over many machines: head, worker, status")
    sub = p.add_subparsers(dest="cluster_command", required=True)

    def node_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("--host", default=None, help="this node's address as the others reach it (default: Ray's "
                       "pick, the address of the default route); keep it on a private network")
        q.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may schedule here (default: all)")
        q.add_argument("--object-store-mb", type=int, default=None,
                       help="Ray object store size in MiB (dfstream passes no frames through it; 100 is plenty)")

    head = sub.add_parser("head", help="start the cluster's head (foreground until SIGTERM)")
    head.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"Ray's GCS port (default {DEFAULT_PORT})")
    head.add_argument("--cameras", type=_count, default=0, help="cameras the head may hold itself (default 0)")
    head.add_argument("--redis", default=None, metavar="URL",
                      help="redis://HOST:PORT[/DB] (or rediss://) that keeps the cluster's state, so a lost head "
                      "is resumed by starting this same command again: Ray's GCS tables and the director's table "
                      "(default: in memory, and losing the head loses the cluster)")
    head.add_argument("--cluster-name", default=DEFAULT_CLUSTER_NAME, metavar="NAME",
                      help=f"with --redis: the prefix of this cluster's keys there (default {DEFAULT_CLUSTER_NAME}); "
                      "one name per cluster sharing a Redis")
    head.add_argument("--forget-state", action="store_true",
                      help="with --redis: start a new cluster under this name, deleting the state kept there first "
                      "(Ray's tables and the director's: its cameras and pipeline). Needed to change the pipeline")
    node_options(head)
    head.set_defaults(run=run_head)

    worker = sub.add_parser("worker", help="join a cluster with camera capacity (foreground until SIGTERM, "
                            "which moves its cameras first)")
    worker.add_argument("--address", required=True, metavar="HOST:PORT", help="the head's address")
    worker.add_argument("--cameras", type=_count, required=True, help="cameras this node may hold")
    node_options(worker)
    worker.set_defaults(run=run_worker)

    status = sub.add_parser("status", help="nodes, capacity, which camera runs where, states, overlay ages")
    status.add_argument("--address", required=True, metavar="HOST:PORT", help="the head's address")
    status.add_argument("--json", action="store_true", help="the director's status as JSON")
    status.set_defaults(run=run_status)
    return p


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: a node holds 0 or more cameras")
    return value


def _store(args: argparse.Namespace) -> int | None:
    return args.object_store_mb * MIB if args.object_store_mb else None


def run_head(args: argparse.Namespace) -> int:
    from stream.cluster import head
    from stream.cluster.state import StateStore

    store = StateStore(args.redis, args.cluster_name) if args.redis else None  # ValueError: refused before Ray
    if args.forget_state:
        if store is None:
            raise ValueError("--forget-state needs --redis: without it nothing is kept")
        store.forget()
        print(f"dfstream cluster head: the state of {store.name!r} in {store.redacted} is forgotten", flush=True)
    return head.run(args.port, args.host, args.cameras, args.num_cpus, _store(args), store)


def run_worker(args: argparse.Namespace) -> int:
    from stream.cluster import worker

    if args.cameras < 1:
        raise ValueError("a worker needs --cameras 1 or more: it exists to hold cameras")
    return worker.run(args.address, args.cameras, args.host, args.num_cpus, _store(args))


def run_status(args: argparse.Namespace) -> int:
    from stream.cluster import status

    import os
    import sys

    found = status.fetch(args.address)
    print(json.dumps(found, indent=2) if args.json else status.render(found), flush=True)
    sys.stderr.flush()
    # Ray's driver can crash while the interpreter tears down after ray.shutdown(); the answer is out, so the
    # exit status must not depend on that
    os._exit(EXIT_OK)
