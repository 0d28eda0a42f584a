"""A head that can die, for real: `dfstream cluster head --redis` (Ray's GCS and the director's table in Redis),
two workers, a `serve --ray` gateway with four looped clips, a real Redis; then SIGKILL of the head's whole process
tree and the same head command again.

Checked, in one bring-up: every camera flows again within 30 s of the restart and keeps its node; `dfstream
cluster status` answers and shows all four placed; a camera can be added and removed through the API again; a
worker killed after the restart still fails over (its cameras on the survivor, its alerts ended `worker-lost`); no
alert key is repeated; and every alert's manifest, written on a worker, is served by the gateway at
`/evidence/ID/manifest.json` with the sha256 its custody names (the recording too, with Range requests).

The nodes run the tests' cheap pipeline (tests/support/cluster_fakes.py: one face, always fake), and recordings are cut
at `max_clip_s` 6 s, so every camera's alert gets a manifest while it is still open.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request

import pytest

from support.shared import FFPP
from support.parts import needs
from support.polling import wait_for
from support.ray_cluster import Cluster, free_port, ray_unavailable
from support.redis_server import RedisServer, unavailable_reason
from support.serve_fakes import send
from test_cluster import CLIPS, alert_entries, gateway_args, open_alerts, watch, where, write_config

pytestmark = [pytest.mark.slow, needs("redis-server", unavailable_reason()), needs("ray", ray_unavailable()),
              needs("the shared FF++ media", None if FFPP.is_dir() else f"not found at {FFPP}")]

FLOW_AGAIN_S = 30.0  # the promise: every camera flows again within this long of the head's restart
FAILOVER_S = 30.0  # a worker lost after the restart: its cameras back on the survivor (the target is 10 s; loaded box)
WORKER_LOST_WITHIN_S = 30.0
# the head command's own start: up to 3 tries of `ray start --head`, each bounded by Ray's fixed 30 s for its raylet
# (a loaded machine can need a second one); not a promise of the product, a bound for this machine
HEAD_RESTART_S = 300.0


def status_or_none(cluster: Cluster) -> dict | None:
    try:
        return cluster.status()
    except Exception:  # noqa: BLE001 - the head is still coming back
        return None


def all_placed(cluster: Cluster, cams: list[str]) -> dict | None:
    found = status_or_none(cluster)
    if found and all(found["cameras"].get(c, {}).get("node_name") for c in cams):
        return found
    return None


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_head_loss_resumes_the_cluster_and_evidence_follows_the_alert(tmp_path):
    import redis

    config = write_config(tmp_path / "serve.yaml", CLIPS[:4], models="[meso4-f2f]",
                          source_policy=f"{{allowed_paths: ['{FFPP}']}}",
                          evidence="{max_clip_s: 6, pre_capture_s: 1, post_capture_s: 1}")
    with RedisServer() as rs, Cluster(tmp_path) as cluster:
        client = redis.Redis.from_url(rs.url)
        head = cluster.head(redis=rs.url)
        w1, w2 = cluster.worker(4), cluster.worker(4)
        workers = {cluster.node_name(w1): w1, cluster.node_name(w2): w2}
        port = free_port()
        cluster.gateway(gateway_args(rs.url, config, port, tmp_path / "gw", "--node-pipeline", "support.cluster_fakes:pipeline"))
        ws = watch(port)
        cams = [f"cam{i}" for i in range(4)]
        try:
            wait_for(lambda: all(ws.times("overlay", c) for c in cams), 180, "overlays of all four cameras")
            before = where(cluster)
            assert sorted(before.values()) == sorted([*workers] * 2), before
            # every camera's alert has its custody (the recording cut at max_clip_s), written on its worker
            wait_for(lambda: {m["stream"] for m in alert_entries(client) if m.get("custody")} >= set(cams), 90,
                     "a manifest for every camera's alert")
            assert client.exists("dfstream-cluster:director")  # the director's table is in Redis

            # -- SIGKILL the head's whole process tree, then the same command ---------------------------------------
            head.kill_tree()
            killed = time.time()
            time.sleep(2)
            # the nodes go on meanwhile: the cameras never needed the head
            assert all(ws.times("overlay", c, killed + 0.5) for c in cams), "overlays stopped while the head was down"
            restarted = time.time()  # the same command again
            cluster.head(redis=rs.url, name="head2", timeout=HEAD_RESTART_S)
            head_s = time.time() - restarted
            flowing = {c: wait_for(lambda c=c: (ws.times("overlay", c, restarted) or [None])[0], FLOW_AGAIN_S,
                                   f"{c} after the restart") - restarted for c in cams}
            found = wait_for(lambda: all_placed(cluster, cams), 180, "cluster status with all four cameras placed")
            status_s = time.time() - restarted
            print(f"head loss: first overlay of each camera after the restart {flowing} s; head up {head_s:.1f} s "
                  f"and cluster status with every camera placed {status_s:.1f} s after the restart")
            assert max(flowing.values()) <= FLOW_AGAIN_S
            assert {c: found["cameras"][c]["node_name"] for c in cams} == before  # cameras kept their nodes
            assert found["director"]["restored_cameras"] == 4 and found["director"]["loaded"]

            # -- the director takes changes again: a camera added, placed, flowing, then removed -----------------
            origin = {"Origin": f"http://127.0.0.1:{port}"}
            status, body = send(port, "POST", "/api/streams", {"url": str(CLIPS[0]), "name": "cam4", "loop": True},
                                **origin)
            assert status == 201, body
            added = time.time()
            wait_for(lambda: ws.times("overlay", "cam4", added), 60, "cam4 placed after the restart")
            status, body = send(port, "DELETE", "/api/streams/cam4", **origin)
            assert status == 200, body
            wait_for(lambda: "cam4" not in where(cluster), 30, "cam4 removed")

            # -- a worker killed after the restart still fails over ---------------------------------------------
            victim = before["cam0"]
            moved = [c for c, n in before.items() if n == victim]
            survivor = next(n for n in workers if n != victim)
            lost_sources = {m["source"] for m in open_alerts(alert_entries(client)).values() if m["stream"] in moved}
            workers[victim].kill_tree()
            lost = time.time()
            back = {c: wait_for(lambda c=c: (ws.times("overlay", c, lost + 0.5) or [None])[0], FAILOVER_S,
                                f"{c} back after the worker's loss") - lost for c in moved}
            wait_for(lambda: set(where(cluster).values()) == {survivor}, FAILOVER_S, f"every camera on {survivor}")
            print(f"worker lost after the head's restart: overlays back after {back} s")
            wait_for(lambda: not [m for m in open_alerts(alert_entries(client)).values()
                                  if m["source"] in lost_sources], WORKER_LOST_WITHIN_S, "the lost node's alerts ended")
            assert {m["stream"] for m in alert_entries(client)
                    if m["event"] == "end" and m.get("reason") == "worker-lost"} == set(moved)

            # -- the alert stream: every key once -------------------------------------------------------------------
            keys = [f[b"key"] for _, f in client.xrange("dfstream:alerts")]
            assert keys and len(keys) == len(set(keys))

            # -- every alert's manifest, written on a worker, from the gateway --------------------------------------
            custodies = {m["id"]: m["custody"] for m in alert_entries(client) if m.get("custody")}
            assert {m["stream"] for m in alert_entries(client) if m["id"] in custodies} >= set(cams)
            gateway_files = tmp_path / "gw" / "evidence"
            assert not any((gateway_files / a).exists() for a in custodies)  # nothing was written on the gateway

            def served(alert_id: str, custody: dict) -> bool:
                code, body, _ = get(port, f"/evidence/{alert_id}/manifest.json")
                return code == 200 and hashlib.sha256(body).hexdigest() == custody["manifest_sha256"]
            for alert_id, custody in custodies.items():
                wait_for(lambda a=alert_id, c=custody: served(a, c), 30, f"the manifest of {alert_id}")
                manifest = json.loads((gateway_files / alert_id / "manifest.json").read_text())
                assert manifest["alert"] == alert_id
            # the page plays the recording: a Range request answered from the copy, equal to the node's bytes
            alert_id, custody = next(iter(custodies.items()))
            code, part, headers = get(port, f"/evidence/{alert_id}/recording.mp4", {"Range": "bytes=0-99"})
            assert code == 206 and len(part) == 100 and headers["Content-Type"] == "video/mp4"
            whole = (gateway_files / alert_id / "recording.mp4").read_bytes()
            assert hashlib.sha256(whole).hexdigest() == custody["files"]["recording.mp4"]["sha256"]
            assert part == whole[:100]
        finally:
            ws.close()
