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
