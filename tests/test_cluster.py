"""dfstream on Ray, for real: `dfstream cluster head`, workers and a `serve --ray` gateway as processes on
loopback, a real Redis, and the shared clips decoded on the nodes.

One bring-up carries the head-loss and failover scenarios in order (each cluster start costs ~20 s of a 2-core
machine, and the head loss needs the same four cameras on two workers as the failover): a head with `--redis` (Ray's
GCS and the director's table in Redis), spread 2 + 2, every camera's alert with its custody -> SIGKILL of the head's
whole process tree and the same head command again (every camera flows again within 30 s on its node, `cluster
status` lists all four, a camera can be added and removed again) -> SIGKILL of a worker's whole process tree ->
unplaced when full -> a third worker joins -> gateway restart -> graceful SIGTERM -> every alert key once, and
every alert's manifest, written on a worker, served by the gateway with the sha256 its custody names (the
recording too, with Range requests). Its nodes run the serve fakes' one-face detector and always-fake engine
(tests/support/cluster_fakes.py), so every track opens an alert at once and a lost node always leaves open alerts;
recordings are cut at `max_clip_s` 6 s, so every camera's alert gets a manifest while it is still open. A second,
smaller bring-up runs the real pipeline (MTCNN + MesoNet) end to end.

Time bounds in waits are the issue's targets with slack for a loaded 2-core machine; the measured figures are
benchmarks/cluster.py's job.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from support.polling import wait_for
from support.shared import FFPP, MESONET_WEIGHTS
from support.parts import needs
from support.ray_cluster import Cluster, free_port, ray_unavailable
from support.redis_server import RedisServer, unavailable_reason
from support.serve_fakes import send
from support.ws_recorder import WsRecorder

pytestmark = [pytest.mark.slow, needs("redis-server", unavailable_reason()), needs("ray", ray_unavailable()),
              needs("the shared FF++ media", None if FFPP.is_dir() else f"not found at {FFPP}")]

CLIPS = sorted(FFPP.glob("fake/*.mp4"))
FAILOVER_TARGET_S = 10.0  # stream.cluster.settings.FAILOVER_TARGET_S, the promise
SLACK = 2.0  # a loaded 2-core machine (other test runs, four decoders, five Ray nodes' daemons)
WORKER_LOST_WITHIN_S = 30.0
FLOW_AGAIN_S = 30.0  # the promise: every camera flows again within this long of the head's restart
# the head command's own start: up to 3 tries of `ray start --head`, each bounded by Ray's fixed 30 s for its raylet
# (a loaded machine can need a second one); not a promise of the product, a bound for this machine
HEAD_RESTART_S = 300.0


def watch(port: int) -> WsRecorder:
    """The gateway's websocket, recorded on wall-clock time from now on, reconnecting across gateway restarts."""
    return WsRecorder(f"ws://127.0.0.1:{port}/ws", reconnect=True).start()


def max_gap(times: list[float], start: float, end: float) -> float:
    points = [start, *[t for t in times if start <= t <= end], end]
    return max(b - a for a, b in zip(points, points[1:]))


def alert_entries(client) -> list[dict]:
    return [json.loads(f[b"msg"]) for _, f in client.xrange("dfstream:alerts")]


def open_alerts(entries: list[dict]) -> dict[str, dict]:
    state: dict[str, dict] = {}
    for m in entries:
        if m["event"] == "end":
            state.pop(m["id"], None)
        else:
            state[m["id"]] = m
    return state


def where(cluster: Cluster) -> dict[str, str | None]:
    return {name: c["node_name"] for name, c in cluster.status()["cameras"].items()}


def write_config(path: Path, clips: list[Path], **extra: str) -> Path:
    lines = ["sources:"] + [f"  - {{name: cam{i}, url: '{c}', loop: true, analysed_fps: 4}}"
                            for i, c in enumerate(clips)]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def gateway_args(redis_url: str, config: Path, port: int, data: Path, *more: str) -> list[str]:
    return ["--redis", redis_url, "--config", str(config), "--port", str(port), "--offline", "--data-dir", str(data),
            "--weights-dir", str(MESONET_WEIGHTS), *more]


def test_head_loss_failover_unplaced_gateway_restart_and_graceful_leave(tmp_path):
    import redis

    assert len(CLIPS) >= 4
    config = write_config(tmp_path / "serve.yaml", CLIPS[:4], models="[meso4-f2f]",
                          source_policy=f"{{allowed_paths: ['{FFPP}']}}",
                          evidence="{max_clip_s: 6, pre_capture_s: 1, post_capture_s: 1}")
    fakes = ["--node-pipeline", "support.cluster_fakes:pipeline"]
    with RedisServer() as rs, Cluster(tmp_path) as cluster:
        client = redis.Redis.from_url(rs.url)
        head = cluster.head(redis=rs.url)
        w1, w2 = cluster.worker(4), cluster.worker(4)
        names = {cluster.node_name(w1): w1, cluster.node_name(w2): w2}
        port = free_port()
        origin = {"Origin": f"http://127.0.0.1:{port}"}
        args = gateway_args(rs.url, config, port, tmp_path / "gw", *fakes)
        gateway = cluster.gateway(args)
        ws = watch(port)
        cams = [f"cam{i}" for i in range(4)]
        try:
            # -- four cameras, spread two and two, all overlays on the gateway's websocket ---------------------
            wait_for(lambda: all(ws.times("overlay", c) for c in cams), 180, "overlays of all four cameras")
            placed = where(cluster)
            assert sorted(placed.values()) == sorted([*names] * 2), placed
            # every camera has an open alert (the fake engine), on its own node's bus
            wait_for(lambda: {m["stream"] for m in open_alerts(alert_entries(client)).values()} >= set(cams), 60,
                     "an open alert on every camera")
            # every camera's alert has its custody (the recording cut at max_clip_s), written on its worker
            wait_for(lambda: {m["stream"] for m in alert_entries(client) if m.get("custody")} >= set(cams), 90,
                     "a manifest for every camera's alert")
            assert client.exists("dfstream-cluster:director")  # the director's table is in Redis

            head_loss(cluster, head, rs.url, ws, cams, placed)
            # -- the director takes changes again: a camera added, placed, flowing, then removed -----------------
            status, body = send(port, "POST", "/api/streams", {"url": str(CLIPS[0]), "name": "extra", "loop": True},
                                **origin)
            assert status == 201, body
            added = time.time()
            wait_for(lambda: ws.times("overlay", "extra", added), 60, "the extra camera placed after the restart")
            status, body = send(port, "DELETE", "/api/streams/extra", **origin)
            assert status == 200, body
            wait_for(lambda: "extra" not in where(cluster), 30, "the extra camera removed")

            # -- SIGKILL one worker's whole process tree (after the head's restart) --------------------------------
            victim_name = placed["cam0"]
            victim_cams = [c for c, n in placed.items() if n == victim_name]
            others = [c for c in cams if c not in victim_cams]
            lost_sources = {m["source"] for m in open_alerts(alert_entries(client)).values()
                            if m["stream"] in victim_cams}
            assert len(lost_sources) == 1
            names[victim_name].kill_tree()
            killed = time.time()
            resumed = {c: wait_for(lambda c=c: (ws.times("overlay", c, killed + 0.5) or [None])[0],
                                   FAILOVER_TARGET_S * SLACK, f"{c} back after the kill") - killed
                       for c in victim_cams}
            survivor = next(n for n in names if n != victim_name)
            # the director's table follows within the target (its status can trail the first resumed overlay)
            wait_for(lambda: set(where(cluster).values()) == {survivor}, FAILOVER_TARGET_S,
                     f"every camera listed on {survivor}")
            print(f"failover: overlays back {resumed} s after the SIGKILL")
            assert max(resumed.values()) <= FAILOVER_TARGET_S * SLACK, resumed
            # the other cameras never stopped
            now = time.time()
            for c in others:
                assert max_gap(ws.times("overlay", c), killed - 5, now) < FAILOVER_TARGET_S / 2, c
            # the lost node's open alerts end, once, with reason worker-lost
            wait_for(lambda: not [m for m in open_alerts(alert_entries(client)).values()
                                  if m["source"] in lost_sources], WORKER_LOST_WITHIN_S, "the lost node's alerts ended")
            entries = alert_entries(client)
            ends = [m for m in entries if m["event"] == "end" and m.get("reason") == "worker-lost"]
            assert ends and {m["stream"] for m in ends} == set(victim_cams)
            # a face still fake on the new node opens a new alert there
            wait_for(lambda: {m["stream"] for m in open_alerts(alert_entries(client)).values()
                              if m["source"] not in lost_sources} >= set(victim_cams), 30,
                     "new alerts on the moved cameras from their new node")

            # a name already taken with another address is refused, and nothing changes
            before = where(cluster)
            status, body = send(port, "POST", "/api/streams", {"url": str(CLIPS[1]), "name": "cam0"}, **origin)
            assert status == 400 and "another address" in body, (status, body)
            assert where(cluster) == before

            # -- capacity exhausted: the fifth camera is unplaced, then placed when a worker joins --------------
            status, body = send(port, "POST", "/api/streams", {"url": str(CLIPS[0]), "name": "cam4", "loop": True},
                                **origin)
            assert status == 201, body
            wait_for(lambda: "unplaced" in [m.get("state") for m in ws.of("status", "cam4")], 30, "cam4 reported unplaced on the websocket")
            listed = json.loads(send(port, "GET", "/api/streams")[1])
            assert listed["cam4"]["state"] == "unplaced" and len(listed) == 5
            w3 = cluster.worker(4)
            w3_name = cluster.node_name(w3)
            joined = time.time()
            wait_for(lambda: ws.times("overlay", "cam4", joined), 120, "cam4 placed once a worker joined")
            assert where(cluster)["cam4"] == w3_name

            # -- gateway restart: a fresh page sees every camera again ------------------------------------------
            ws.close()
            gateway.stop()
            gateway = cluster.gateway(args, name="gateway2")
            ws = watch(port)
            everyone = [*cams, "cam4"]
            wait_for(lambda: all(ws.times("overlay", c) for c in everyone), 60, "all cameras after the gateway restart")
            assert set(json.loads(send(port, "GET", "/api/streams")[1])) == set(everyone)

            # -- graceful leave: SIGTERM moves cam4 with no long gap --------------------------------------------
            w3_sources = {m["source"] for m in alert_entries(client) if m["stream"] == "cam4"}
            status, _ = send(port, "DELETE", f"/api/streams/{others[0]}", **origin)
            assert status == 200
            wait_for(lambda: others[0] not in where(cluster), 30, f"{others[0]} removed")
            left = time.time()
            w3.signal(15)
            assert w3.proc.wait(60) == 0, w3.tail()
            w3.wait_for(r"1 camera\(s\) moved: cam4 -> ")
            moved = wait_for(lambda: ws.times("overlay", "cam4", time.time() - 0.5) and where(cluster)["cam4"], 30,
                             "cam4 on its new node")
            assert moved == survivor
            gap = max_gap(ws.times("overlay", "cam4"), left - 2, time.time())
            print(f"graceful leave: longest gap of cam4's overlays {gap:.2f} s")
            assert gap <= FAILOVER_TARGET_S * SLACK

            # -- the alert stream as a whole: every key once, nothing left open from a lost node ----------------
            keys = [f[b"key"] for _, f in client.xrange("dfstream:alerts")]
            assert keys and len(keys) == len(set(keys))
            # the leaving node ended its own alerts before it went: plain ends, not worker-lost
            wait_for(lambda: not [m for m in open_alerts(alert_entries(client)).values()
                                  if m["source"] in w3_sources], WORKER_LOST_WITHIN_S, "the leaving node's alerts ended")
            w3_ends = [m for m in alert_entries(client) if m["source"] in w3_sources and m["event"] == "end"]
            assert w3_ends and not [m for m in w3_ends if m.get("reason")]

            evidence_follows_the_alerts(client, port, tmp_path / "gw" / "evidence", cams)
        finally:
            ws.close()


def head_loss(cluster: Cluster, head, redis_url: str, ws: WsRecorder, cams: list[str], placed: dict) -> None:
    """SIGKILL the head's whole process tree, then the same command: the nodes go on meanwhile, every camera flows
    again within FLOW_AGAIN_S of the restart on the node it had, and the restored director lists them all."""
    head.kill_tree()
    killed = time.time()
    time.sleep(2)
    # the nodes go on meanwhile: the cameras never needed the head
    assert all(ws.times("overlay", c, killed + 0.5) for c in cams), "overlays stopped while the head was down"
    restarted = time.time()  # the same command again
    cluster.head(redis=redis_url, name="head2", timeout=HEAD_RESTART_S)
    head_s = time.time() - restarted
    flowing = {c: wait_for(lambda c=c: (ws.times("overlay", c, restarted) or [None])[0], FLOW_AGAIN_S,
                           f"{c} after the restart") - restarted for c in cams}
    found = wait_for(lambda: all_placed(cluster, cams), 180, "cluster status with all four cameras placed")
    status_s = time.time() - restarted
    print(f"head loss: first overlay of each camera after the restart {flowing} s; head up {head_s:.1f} s "
          f"and cluster status with every camera placed {status_s:.1f} s after the restart")
    assert max(flowing.values()) <= FLOW_AGAIN_S
    assert {c: found["cameras"][c]["node_name"] for c in cams} == placed  # cameras kept their nodes
    assert found["director"]["restored_cameras"] == 4 and found["director"]["loaded"]


def evidence_follows_the_alerts(client, port: int, gateway_files: Path, cams: list[str]) -> None:
    """Every alert's manifest, written on a worker, is served by the gateway with the sha256 its custody names,
    and so is the recording, with Range requests; nothing was written on the gateway before it was asked."""
    custodies = {m["id"]: m["custody"] for m in alert_entries(client) if m.get("custody")}
    assert {m["stream"] for m in alert_entries(client) if m["id"] in custodies} >= set(cams)
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


def test_real_pipeline_on_a_node_reaches_the_gateway(tmp_path):
    """MTCNN and MesoNet on a cluster node (the head, holding two cameras): faces the node's engine scored reach
    the gateway's websocket through Redis, and `cluster status` shows where each camera runs."""
    clips = [FFPP / "fake" / "Face2Face_750_743.mp4", FFPP / "real" / "519.mp4"]
    config = write_config(tmp_path / "serve.yaml", clips, models="[meso4-f2f]", detector="{max_side: 320}")
    with RedisServer() as rs, Cluster(tmp_path) as cluster:
        cluster.head(cameras=2)
        port = free_port()
        cluster.gateway(gateway_args(rs.url, config, port, tmp_path / "gw"))
        ws = watch(port)
        try:
            def scored(stream: str) -> bool:
                return any(m.get("source") != "director"
                           and any(f.get("raw") is not None and "meso4-f2f" in f.get("engines", {})
                                   for f in m.get("faces", []))
                           for m in ws.of("overlay", stream))
            wait_for(lambda: scored("cam0") and scored("cam1"), 240, "faces scored by meso4-f2f from both cameras")
            text = cluster.status(text=True)
            assert "cam0" in text and "cam1" in text and "cameras 2/2" in text, text
        finally:
            ws.close()
