"""The cluster's parts that need no running cluster: the placement rule, `ray start`'s arguments, the pipeline
handed to nodes, and the command line's refusals (each refused before anything starts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream.cluster.pipeline import PIPELINE_FIELDS, Pipeline
from stream.cluster.placement import free_slots, place
from stream.cluster.settings import HEALTH, RESOURCE, start_args
from stream.config.serve import ServeConfig

REPO = Path(__file__).resolve().parents[1]


def test_placement_spreads_over_nodes():
    placed = place([f"c{i}" for i in range(4)], {"a": 4, "b": 4}, {})
    assert sorted(placed.values()) == ["a", "a", "b", "b"]


def test_placement_fills_the_emptiest_node_and_never_moves_placed_cameras():
    assigned = {"x": "a", "y": "a", "z": "b"}
    placed = place(["new"], {"a": 4, "b": 2}, assigned)
    assert placed == {"new": "a"}  # a has 2 free slots, b only 1
    assert set(placed).isdisjoint(assigned)


def test_placement_respects_capacity_and_leaves_the_rest_unplaced():
    placed = place(["c1", "c2", "c3"], {"a": 1, "b": 1}, {})
    assert len(placed) == 2 and "c3" not in placed
    assert place(["c"], {}, {}) == {}
    assert free_slots({"a": 1}, {"p": "a", "q": "a"}) == {"a": 0}


def test_head_arguments_carry_the_health_checks_and_no_dashboard():
    args = start_args(head=True, port=6390, cameras=0)
    config = json.loads(args[args.index("--system-config") + 1])
    assert config == HEALTH.system_config()
    assert config["health_check_period_ms"] * config["health_check_failure_threshold"] <= 3000
    assert "--include-dashboard=false" in args and "--block" in args
    assert json.loads(args[args.index("--resources") + 1]) == {}


def test_worker_arguments_carry_the_camera_resource():
    args = start_args(head=False, address="10.0.0.1:6380", cameras=4, node_name="dfstream-ab")
    assert json.loads(args[args.index("--resources") + 1]) == {RESOURCE: 4}
    assert args[args.index("--address") + 1] == "10.0.0.1:6380" and "--system-config" not in args
    with pytest.raises(ValueError):
        start_args(head=False, cameras=1)


def test_the_pipeline_is_the_serve_config_less_the_gateway_own_fields():
    config = ServeConfig(redis="redis://127.0.0.1:6379/0", port=9999, token="t", models=["meso4-df"])
    spec = Pipeline.from_serve(config, offline=True)
    assert set(spec.serve) == set(PIPELINE_FIELDS) and spec.serve["models"] == ["meso4-df"] and spec.offline
    assert Pipeline.from_serve(config.model_copy(update={"port": 1, "token": "u"})) == Pipeline.from_serve(config)
    with pytest.raises(ValueError, match="needs --redis"):
        Pipeline.from_serve(ServeConfig())
    with pytest.raises(ValueError):
        Pipeline(serve={}, factory="not a module path")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "DFSTREAM_DATA": str(cwd)})


def test_serve_ray_without_redis_is_refused_before_anything_starts(tmp_path):
    out = _cli("serve", "--ray", "127.0.0.1:1", "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert out.returncode == 2 and "needs --redis" in out.stderr
    assert not (tmp_path / "d").exists()  # no bus, no alert log, no cluster call


def test_node_pipeline_without_ray_is_refused(tmp_path):
    out = _cli("serve", "--node-pipeline", "m:f", "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert out.returncode == 2 and "use it with --ray" in out.stderr
    assert not (tmp_path / "d").exists()


def test_worker_without_cameras_is_refused(tmp_path):
    out = _cli("cluster", "worker", "--address", "127.0.0.1:1", "--cameras", "0", cwd=tmp_path)
    assert out.returncode == 2 and "--cameras 1 or more" in out.stderr
    negative = _cli("cluster", "head", "--cameras", "-1", cwd=tmp_path)
    assert negative.returncode == 2 and "negative" in negative.stderr


def test_the_camera_table_comes_back_from_its_snapshot():
    from stream.cluster.placement import CameraTable

    table = CameraTable(2.0)
    for name in ("b", "a", "c"):
        table.add({"name": name, "url": f"/clips/{name}.mp4"})
    table.assign({"b": "n1", "a": "n2"})
    table.take_node("n2")  # a ran before, now waits for a node
    snapshot = json.loads(json.dumps(table.snapshot()))  # what Redis holds
    back = CameraTable(2.0)
    back.restore(snapshot)
    assert list(back.cameras) == ["b", "a", "c"] and back.assigned == {"b": "n1"}
    # a camera that ran before still does not wait for loading nodes; one never placed does
    assert back.waiting(nodes_loading=True) == ["a"] and back.waiting(nodes_loading=False) == ["a", "c"]
    assert back.add({"name": "b", "url": "/clips/b.mp4"}) is False
    with pytest.raises(ValueError, match="another address"):
        back.add({"name": "b", "url": "/elsewhere.mp4"})


def test_the_state_store_speaks_ray_and_keeps_secrets_out_of_what_it_prints():
    from stream.cluster.state import StateStore

    store = StateStore("redis://ops:s3cr%40t@10.0.0.5:6390/2", "site-a")
    assert store.ray_env() == {"RAY_REDIS_ADDRESS": "redis://10.0.0.5:6390", "RAY_external_storage_namespace": "site-a"}
    assert store.ray_args() == ["--redis-username", "ops", "--redis-password", "s3cr@t"]
    assert "s3cr" not in store.redacted and store.redacted == "redis://10.0.0.5:6390/2"
    assert store.key == "site-a:director"
    assert StateStore("rediss://h:1").ray_env()["RAY_REDIS_ADDRESS"] == "rediss://h:1"
    for url, name in (("http://h:1", "x"), ("redis://", "x"), ("redis://h:1", "a:b"), ("redis://h:1", "")):
        with pytest.raises(ValueError):
            StateStore(url, name)


def test_head_arguments_with_redis_carry_the_credentials_and_every_node_waits_for_a_lost_head():
    from stream.cluster.node_process import ray_env
    from stream.cluster.settings import HEAD_LOSS

    args = start_args(head=True, port=6390, redis_args=["--redis-password", "p"])
    assert args[args.index("--redis-password") + 1] == "p"
    assert ray_env()["RAY_gcs_rpc_server_reconnect_timeout_s"] == str(HEAD_LOSS.reconnect_s)
    assert HEAD_LOSS.reconnect_s > 60  # Ray's default would drop the workers before a rebooted head is back


def test_head_with_a_bad_redis_address_is_refused_before_ray_starts(tmp_path):
    out = _cli("cluster", "head", "--redis", "http://127.0.0.1:1", "--port", "1", cwd=tmp_path)
    assert out.returncode == 2 and "redis://HOST:PORT" in out.stderr
    assert not list(tmp_path.iterdir())  # no Ray temp dir, nothing written
