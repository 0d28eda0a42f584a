"""Evidence that follows the alert: a node's evidence uploaded into a real Redis (stream/live/bus/evidence_upload.py,
redis_evidence.py) and served by a gateway's `/evidence` route (the real app), byte for byte.

The gateway here is the real serve app whose `remote` is a stand-in holding no cameras: its `fetch_evidence` is
the same `RedisEvidence.fetch` the cluster's gateway (stream/cluster/gateway.py) calls; the cluster test
(test_cluster.py) runs the whole path on Ray.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

from support.live_server import LiveServer
from support.parts import import_or_require, needs
from support.polling import wait_for
from support.redis_server import RedisServer, unavailable_reason
from support.serve_fakes import AlwaysFake, NoFaces
from stream.config.evidence import SharedEvidencePolicy
from stream.config.serve import ServeConfig
from stream.live.evidence.manifest import write_manifest
from stream.live.evidence.names import MANIFEST, OVERLAY, RECORDING, SNAPSHOT, STRIP
from stream.messages import Alert

pytestmark = needs("redis-server", unavailable_reason())
NAMESPACE = "site-e"
CHUNK = 64 << 10  # small chunks: the recording spans more than one batch of them


@pytest.fixture
def server():
    import_or_require("redis")
    with RedisServer() as srv:
        yield srv


class EvidenceOnly:
    """A gateway's remote with no cameras: evidence comes from Redis as on a cluster's gateway."""

    def __init__(self, url: str, policy: SharedEvidencePolicy) -> None:
        from stream.live.bus.redis_evidence import RedisEvidence

        self.shelf = RedisEvidence(url, NAMESPACE, policy)

    def start(self, deliver, own_source) -> None: ...
    def add(self, config): raise ValueError("no cameras here")
    def remove(self, name: str) -> bool: return False
    def names(self) -> set[str]: return set()
    def statuses(self) -> dict[str, dict]: return {}
    def fetch_evidence(self, alert_id: str, name: str, folder: Path) -> None: self.shelf.fetch(alert_id, name, folder)
    def close(self) -> None: self.shelf.close()


def sha(path_or_bytes) -> str:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return hashlib.sha256(data).hexdigest()


def get(base: str, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(base + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def alert(alert_id: str, event: str, folder: Path, custody: dict | None = None, seq: int = 1) -> dict:
    evidence = {"snapshot": str(folder / SNAPSHOT), "clip": str(folder / STRIP), "recording": str(folder / RECORDING)}
    return Alert(event=event, id=alert_id, seq=seq, stream="cam", track=1, started_at=time.time(), ended_at=None,
                 score_max=0.9, engines={"m": 0.9}, evidence=evidence, custody=custody).to_message()


def write_face(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SNAPSHOT).write_bytes(b"\xff\xd8" + os.urandom(3000))
    (folder / STRIP).write_bytes(os.urandom(9000))


def write_recording(folder: Path, size: int) -> dict:
    """The recording and overlay track, then the manifest: the custody an alert's end carries."""
    (folder / RECORDING).write_bytes(os.urandom(size))
    (folder / OVERLAY).write_text(json.dumps({"frames": [{"t": 0.0, "faces": []}]}))
    return write_manifest(folder, {"alert": folder.name, "stream": "cam"}, [RECORDING, OVERLAY, SNAPSHOT, STRIP])


def uploader(url: str, root: Path, data: Path, policy: SharedEvidencePolicy):
    from stream.live.bus.evidence_upload import EvidenceUploader

    up = EvidenceUploader(url, NAMESPACE, root, policy, data, source="node-a")
    up.start()
    return up


def index(client, alert_id: str) -> dict[str, dict]:
    return {k.decode(): json.loads(v) for k, v in client.hgetall(f"{NAMESPACE}:evidence:{alert_id}").items()}


def gateway(url: str, data: Path, policy: SharedEvidencePolicy) -> LiveServer:
    return LiveServer(ServeConfig(data_dir=data), [AlwaysFake()], NoFaces(), remote=EvidenceOnly(url, policy))


def test_a_nodes_evidence_reaches_the_gateway_byte_for_byte(server, tmp_path):
    import redis

    client = redis.Redis.from_url(server.url)
    policy = SharedEvidencePolicy(chunk_bytes=CHUNK)
    root, alert_id = tmp_path / "node" / "evidence", "a" * 32
    folder = root / alert_id
    up = uploader(server.url, root, tmp_path / "node", policy)
    try:
        # the start names the face files before the evidence thread wrote them: the upload waits for them
        up.publish(alert(alert_id, "start", folder))
        time.sleep(0.6)
        assert not index(client, alert_id)
        write_face(folder)
        wait_for(lambda: set(index(client, alert_id)) == {SNAPSHOT, STRIP}, 15, "the face files uploaded")
        custody = write_recording(folder, 11 * CHUNK + 123)  # 12 chunks: two round trips
        end = alert(alert_id, "end", folder, custody, seq=2)
        up.publish(end)
        wait_for(lambda: set(index(client, alert_id)) == {SNAPSHOT, STRIP, RECORDING, OVERLAY, MANIFEST}, 15,
                 "every file of the manifest uploaded")
        assert index(client, alert_id)[RECORDING]["chunks"] == 12
        uploaded = up.counters["uploaded_files"]
        up.publish(end)  # a replay: nothing is sent twice
        wait_for(lambda: up.sender.stats()["delivered"] == 3, 15, "the replay delivered")
        assert up.counters["uploaded_files"] == uploaded == 5
    finally:
        up.close()

    with gateway(server.url, tmp_path / "gw", policy) as gw:
        for name in (MANIFEST, RECORDING, OVERLAY, SNAPSHOT, STRIP):
            code, body, headers = get(gw.base, f"/evidence/{alert_id}/{name}")
            assert code == 200, (name, body[:200])
            assert sha(body) == sha(folder / name), name  # the node's bytes
        assert sha(folder / MANIFEST) == custody["manifest_sha256"]
        code, part, headers = get(gw.base, f"/evidence/{alert_id}/{RECORDING}", {"Range": "bytes=70000-70099"})
        assert code == 206 and part == (folder / RECORDING).read_bytes()[70000:70100]
        assert headers["Content-Type"] == "video/mp4"
        # the copy is in the gateway's own evidence folder: `alerts verify` works there too
        assert sha(tmp_path / "gw" / "evidence" / alert_id / RECORDING) == custody["files"][RECORDING]["sha256"]


def test_a_file_over_the_cap_is_refused_clearly_and_the_rest_is_served(server, tmp_path):
    import redis

    client = redis.Redis.from_url(server.url)
    policy = SharedEvidencePolicy(chunk_bytes=CHUNK, max_alert_bytes=200 << 10)
    root, alert_id = tmp_path / "node" / "evidence", "b" * 32
    folder = root / alert_id
    write_face(folder)
    custody = write_recording(folder, 300 << 10)  # over the 200 KiB cap on its own
    before = sha(folder / RECORDING)
    up = uploader(server.url, root, tmp_path / "node", policy)
    try:
        up.publish(alert(alert_id, "end", folder, custody, seq=2))
        wait_for(lambda: RECORDING in index(client, alert_id), 15, "the recording's entry")
    finally:
        up.close()
    entry = index(client, alert_id)[RECORDING]
    assert "refused" in entry and "200.0 MiB" not in entry["refused"] and "over its cap of 0.2 MiB" in entry["refused"]
    assert not client.keys(f"{NAMESPACE}:evidence:{alert_id}:{RECORDING}:*")  # not one chunk of it went in
    assert up.counters == {"uploaded_files": 4, "refused_files": 1}
    assert sha(folder / RECORDING) == before  # the node keeps its file as it was

    with gateway(server.url, tmp_path / "gw", policy) as gw:
        code, body, _ = get(gw.base, f"/evidence/{alert_id}/{RECORDING}")
        assert code == 404 and b"evidence.shared.max_alert_bytes" in body and b"node-a" in body, body
        assert not (tmp_path / "gw" / "evidence" / alert_id / RECORDING).exists()
        code, body, _ = get(gw.base, f"/evidence/{alert_id}/{MANIFEST}")
        assert code == 200 and sha(body) == custody["manifest_sha256"]


def test_missing_expired_or_altered_evidence_is_a_404_with_its_reason_and_writes_nothing(server, tmp_path):
    import redis

    from stream.live.bus.redis_evidence import RedisEvidence

    client = redis.Redis.from_url(server.url)
    policy = SharedEvidencePolicy(chunk_bytes=CHUNK)
    node = tmp_path / "node"
    ids = {"expired": "c" * 32, "evicted": "d" * 32, "altered": "e" * 32}
    for alert_id in ids.values():
        write_face(node / alert_id)
        write_recording(node / alert_id, 3 * CHUNK)
    RedisEvidence(server.url, NAMESPACE, SharedEvidencePolicy(chunk_bytes=CHUNK, ttl_s=1)).put(
        ids["expired"], node / ids["expired"], [MANIFEST], "node-a")
    shelf = RedisEvidence(server.url, NAMESPACE, policy)
    for which in ("evicted", "altered"):
        assert shelf.put(ids[which], node / ids[which], [RECORDING], "node-a") == {RECORDING: "stored"}
    client.delete(f"{NAMESPACE}:evidence:{ids['evicted']}:{RECORDING}:1")
    client.set(f"{NAMESPACE}:evidence:{ids['altered']}:{RECORDING}:2", os.urandom(CHUNK))
    time.sleep(2.2)  # the expired one's keys are gone

    gw_root = tmp_path / "gw" / "evidence"
    with gateway(server.url, tmp_path / "gw", policy) as gw:
        cases = {("f" * 32, MANIFEST): b"not uploaded by its node yet, or expired",
                 (ids["expired"], MANIFEST): b"not uploaded by its node yet, or expired",
                 (ids["evicted"], MANIFEST): b"manifest.json of alert " + ids["evicted"].encode() + b" is not in Redis",
                 (ids["evicted"], RECORDING): b"incomplete in Redis (expired or evicted)",
                 (ids["altered"], RECORDING): b"does not match the sha256"}
        for (alert_id, name), reason in cases.items():
            code, body, _ = get(gw.base, f"/evidence/{alert_id}/{name}")
            assert code == 404 and reason in body, (alert_id, name, body)
            assert not (gw_root / alert_id / name).exists()
        assert not [p for p in gw_root.rglob("*") if p.is_file()]  # no copy, no partial file left behind
        # a name outside the evidence files is refused before Redis is asked
        assert get(gw.base, f"/evidence/{ids['evicted']}/..%2Fsecret")[0] == 404
