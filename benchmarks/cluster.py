"""The cluster on this machine: failover time, overlay latency through Redis against local `serve`, memory per node.

Brings up a real cluster on loopback (`dfstream cluster head`, K workers with N camera slots each, Redis, a
`serve --ray` gateway with N looped shared clips) and, in the same run, a local `serve` app (in-process, no Ray,
no Redis) on the same clips with the same pipeline, so the two latencies are measured side by side.

* failover: R rounds of SIGKILL to the whole process tree of the worker holding the most cameras (a machine
  loss whose connections drop at once), or with `--loss freeze` SIGSTOP (a machine gone silent, which only the
  head's health checks notice); for each moved camera, the seconds from the kill to its first overlay on the gateway's websocket from
  its new node. A fresh worker joins after each round so every round has somewhere to go. p50 and max.
* head loss (`--loss head`; the head keeps its state in the run's Redis, `cluster head --redis`): R rounds of
  SIGKILL to the head's whole process tree, then the same head command; the longest gap of any camera's overlays
  around the loss, the seconds from the restart to the head command up, to `cluster status` answering with every
  camera placed, whether every camera kept its node, and what was lost (the director's event list, alert keys).
* latency: for every overlay a websocket client receives, frame arrival -> websocket (the pipeline's own
  `latency_ms` plus publish -> receipt); p50 and p95 for the gateway (node -> Redis -> gateway) and for local
  serve, over the same window.
* memory: the resident memory of each worker node's whole Ray process group (raylet, agents, the node worker)
  and of the node worker alone.

The nodes run the tests' cheap pipeline by default (tests/support/cluster_fakes.py: one face per frame, an always-fake
engine: it isolates the cluster's own costs on a 2-core machine); `--real` runs MTCNN + meso4-f2f on both sides.

    .venv/bin/python benchmarks/cluster.py                      # N=4 cameras over K=2 nodes, 3 rounds
    .venv/bin/python benchmarks/cluster.py --cameras 6 --nodes 3 --rounds 5 --real
    .venv/bin/python benchmarks/cluster.py --loss head --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import psutil  # noqa: E402

from support.ray_cluster import Cluster, free_port  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402
from support.ws_recorder import WsRecorder  # noqa: E402
from test_cluster import max_gap, wait_for, watch, where  # noqa: E402

CLIPS = sorted((ROOT.parent / "shared" / "data" / "ffpp-c23").glob("*/*.mp4"))
WEIGHTS = ROOT.parent / "shared" / "weights" / "mesonet"
ANALYSED_FPS = 4.0
LATENCY_WINDOW_S = 20.0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def latencies(ws: WsRecorder, since: float) -> list[float]:
    return [(t - m["ts"]) * 1000 + m.get("latency_ms", 0.0) for t, m in ws.records
            if m.get("type") == "overlay" and t >= since]


def group_rss(pgid: int) -> int:
    total = 0
    for p in psutil.process_iter(["pid"]):
        try:
            if p.info["pid"] and __import__("os").getpgid(p.info["pid"]) == pgid:
                total += p.memory_info().rss
        except (psutil.Error, ProcessLookupError, OSError):
            pass
    return total


def local_serve(clips: list[Path], real: bool, data: Path):
    from stream.config.serve import ServeConfig
    from stream.live.sources.live import SourceConfig
    from support.live_server import LiveServer

    sources = [SourceConfig(name=f"cam{i}", url=str(c), loop=True, analysed_fps=ANALYSED_FPS)
               for i, c in enumerate(clips)]
    config = ServeConfig(sources=sources, data_dir=data, models=["meso4-f2f"], weights_dir=WEIGHTS)
    if real:
        from engines.registry import build_engine

        return LiveServer(config, [build_engine("meso4-f2f", weights_dir=WEIGHTS, allow_download=False)])
    from support.cluster_fakes import pipeline

    engines, detector, _ = pipeline(config, "cpu")
    return LiveServer(config, engines, detector)


def status_placed(cluster: Cluster, cams: list[str]) -> dict | None:
    try:
        found = cluster.status()
    except Exception:  # noqa: BLE001 - the head is still coming back
        return None
    return found if all(found["cameras"].get(c, {}).get("node_name") for c in cams) else None


def head_rounds(cluster: Cluster, head, ws: WsRecorder, rs: RedisServer, cams: list[str], rounds: int) -> dict:
    """SIGKILL of the head's process tree, then the same head command, `rounds` times: what it costs."""
    import redis

    client = redis.Redis.from_url(rs.url)
    results = []
    for r in range(rounds):
        before = where(cluster)
        events_before = len(cluster.status()["events"])
        head.kill_tree()
        killed = time.time()
        time.sleep(2)
        restarted = time.time()
        head = cluster.head(redis=rs.url, name=f"head-r{r + 1}", timeout=300)
        up = time.time() - restarted
        found = wait_for(lambda: status_placed(cluster, cams), 240, "cluster status with every camera placed")
        answered = time.time() - restarted
        time.sleep(5)
        gap = max(max_gap(ws.times("overlay", c), killed - 5, time.time()) for c in cams)
        keys = [f[b"key"] for _, f in client.xrange("dfstream:alerts")]
        results.append({"head_up_s": round(up, 1), "status_all_placed_s": round(answered, 1),
                        "longest_overlay_gap_s": round(gap, 2),
                        "kept_nodes": {c: n["node_name"] for c, n in found["cameras"].items()} == before,
                        "events_lost": events_before - len(found["events"]) if events_before else 0,
                        "duplicate_alert_keys": len(keys) - len(set(keys))})
        print(f"head round {r + 1}: {results[-1]}", flush=True)
    return {"rounds": results,
            "status_all_placed_s": {"p50": statistics.median(x["status_all_placed_s"] for x in results),
                                    "max": max(x["status_all_placed_s"] for x in results)},
            "longest_overlay_gap_s": max(x["longest_overlay_gap_s"] for x in results)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=4, help="N cameras (looped shared clips)")
    ap.add_argument("--nodes", type=int, default=2, help="K worker nodes, N slots each")
    ap.add_argument("--rounds", type=int, default=3, help="SIGKILL rounds")
    ap.add_argument("--loss", choices=("kill", "freeze", "head"), default="kill",
                    help="kill: SIGKILL the node's process tree (its connections drop at once); freeze: SIGSTOP it "
                         "(a machine gone silent: only the head's health checks notice), SIGKILL after the round; "
                         "head: SIGKILL the head's process tree, then start the same head command again")
    ap.add_argument("--real", action="store_true", help="MTCNN + meso4-f2f instead of the tests' cheap pipeline")
    args = ap.parse_args()
    clips = [CLIPS[i % len(CLIPS)] for i in range(args.cameras)]
    cams = [f"cam{i}" for i in range(args.cameras)]
    work = Path(tempfile.mkdtemp(prefix="dfstream-bench-cluster-"))
    config = work / "serve.yaml"
    config.write_text("sources:\n" + "".join(f"  - {{name: {c}, url: '{p}', loop: true, analysed_fps: {ANALYSED_FPS}}}\n"
                                             for c, p in zip(cams, clips))
                      + f"models: [meso4-f2f]\nweights_dir: {WEIGHTS}\n")
    fakes = [] if args.real else ["--node-pipeline", "support.cluster_fakes:pipeline"]
    out: dict = {"cameras": args.cameras, "nodes": args.nodes, "pipeline": "real (MTCNN + meso4-f2f)" if args.real
                 else "tests/support/cluster_fakes.py", "date": time.strftime("%Y-%m-%d")}
    with RedisServer() as rs, Cluster(work) as cluster, local_serve(clips, args.real, work / "local") as local:
        head = cluster.head(redis=rs.url if args.loss == "head" else None)
        workers = [cluster.worker(args.cameras) for _ in range(args.nodes)]
        names = {cluster.node_name(w): w for w in workers}
        port = free_port()
        cluster.gateway(["--redis", rs.url, "--config", str(config), "--port", str(port), "--offline",
                         "--data-dir", str(work / "gw"), *fakes])
        ws, ws_local = watch(port), watch(local.config.port)
        wait_for(lambda: all(ws.times("overlay", c) for c in cams), 180, "overlays of every camera")
        wait_for(lambda: all(ws_local.times("overlay", c) for c in cams), 180, "local serve's overlays")
        time.sleep(3)
        since = time.time()
        time.sleep(LATENCY_WINDOW_S)
        through, direct = latencies(ws, since), latencies(ws_local, since)
        out["latency_ms"] = {"redis_gateway": {"p50": round(pct(through, 0.5), 1), "p95": round(pct(through, 0.95), 1),
                                               "n": len(through)},
                             "local_serve": {"p50": round(pct(direct, 0.5), 1), "p95": round(pct(direct, 0.95), 1),
                                             "n": len(direct)}}
        status = cluster.status()
        out["memory_mib"] = [{"node": n["name"], "cameras": n["cameras"],
                              "node_worker": round((n["rss_bytes"] or 0) / 2**20),
                              "ray_group": round(group_rss(names[n["name"]].groups[-1]) / 2**20)}
                             for n in status["nodes"] if n["name"] in names]
        if args.loss == "head":
            out["loss"] = "head"
            out["head_loss"] = head_rounds(cluster, head, ws, rs, cams, args.rounds)
            ws.close()
            ws_local.close()
            print(json.dumps(out, indent=2))
            return 0
        failovers: list[float] = []
        for r in range(args.rounds):
            placed = where(cluster)
            counts = {n: list(placed.values()).count(n) for n in names}
            victim = max(counts, key=counts.get)
            moved = [c for c, n in placed.items() if n == victim]
            lost = names.pop(victim)
            if args.loss == "freeze":
                for g in lost.groups:
                    os.killpg(g, signal.SIGSTOP)
            else:
                lost.kill_tree()
            killed = time.time()
            for c in moved:
                failovers.append(wait_for(lambda c=c: (ws.times("overlay", c, killed + 0.5) or [None])[0], 60,
                                          f"{c} back") - killed)
            if args.loss == "freeze":
                lost.kill_tree()
            print(f"round {r + 1}: {len(moved)} camera(s) moved, back after "
                  f"{', '.join(f'{x:.2f}' for x in failovers[-len(moved):])} s", flush=True)
            fresh = cluster.worker(args.cameras)
            names[cluster.node_name(fresh)] = fresh
            wait_for(lambda: len([n for n in cluster.status()["nodes"] if n["ready"]]) >= args.nodes, 120,
                     "the fresh worker ready")
        out["loss"] = args.loss
        out["failover_s"] = {"p50": round(statistics.median(failovers), 2), "max": round(max(failovers), 2),
                             "moved": len(failovers)}
        ws.close()
        ws_local.close()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
