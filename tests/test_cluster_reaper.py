"""The cluster's alert reaper against a real redis-server, in a namespace other than the default: a node publishes
under the gateway's `redis_namespace` (through the same `open_redis` a LiveService uses), and the director's
Redis side (`director.redis_side`, built from the pipeline as `configure` builds it) finds the alerts a lost node
left open there and ends each once, with reason "worker-lost". Before the namespace was one setting, the director
read the default namespace and such alerts were never ended."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from support.parts import import_or_require, needs
from support.polling import wait_for
from support.redis_server import RedisServer, unavailable_reason
from stream.cluster.pipeline import Pipeline
from stream.config.serve import ServeConfig
from stream.live.bus.redis_bus import alerts_stream, channel_patterns
from stream.live.server.service import open_redis
from stream.messages import Alert

pytestmark = needs("redis-server", unavailable_reason())
NAMESPACE = "site-b"


@pytest.fixture
def server():
    import_or_require("redis")
    import_or_require("ray")  # stream.cluster.director is a Ray actor module
    with RedisServer() as srv:
        yield srv


def alert(alert_id: str, event: str = "start", seq: int = 1) -> dict:
    return Alert(event=event, id=alert_id, seq=seq, stream="cam", track=1, started_at=time.time(), ended_at=None,
                 score_max=0.9, engines={"m": 0.9}, evidence={"snapshot": None, "clip": None}).to_message()


def entries(client, namespace: str) -> list[dict]:
    return [json.loads(fields[b"msg"]) for _, fields in client.xrange(alerts_stream(namespace))]


@pytest.mark.ray  # imports stream.cluster.director, a Ray actor module
def test_a_lost_node_alerts_end_as_worker_lost_in_a_non_default_namespace(server, tmp_path: Path):
    import redis

    from stream.cluster.director import redis_side
    from stream.cluster.gateway import ClusterCameras

    gateway_config = ServeConfig(redis=server.url, redis_namespace=NAMESPACE, data_dir=tmp_path / "gateway")
    pipeline = Pipeline.from_serve(gateway_config)
    assert pipeline.serve["redis_namespace"] == NAMESPACE  # every node runs the gateway's namespace
    node_config = ServeConfig.model_validate({**pipeline.serve, "data_dir": str(tmp_path / "node")})
    node = open_redis(node_config)  # the node's LiveService edge
    node.start()
    director_bus, reaper = redis_side(pipeline.serve, tmp_path / "director")
    client = redis.Redis.from_url(server.url)
    try:
        lost_open, lost_ended, other = alert("a" * 32), alert("b" * 32), alert("c" * 32)
        for msg in (lost_open, lost_ended, alert("b" * 32, "end", 2)):
            node.publish(msg)
        survivor = open_redis(ServeConfig.model_validate({**pipeline.serve, "data_dir": str(tmp_path / "n2")}))
        survivor.start()
        survivor.publish(other)
        wait_for(lambda: len(entries(client, NAMESPACE)) == 4, 10, "the nodes' alerts in their namespace")

        assert reaper.step() == 0  # nothing lost yet: nothing ended
        reaper.lost(node.source)
        assert reaper.step() == 1  # only the lost node's alert that is still open
        wait_for(lambda: len(entries(client, NAMESPACE)) == 5, 10, "the worker-lost end")
        end = entries(client, NAMESPACE)[-1]
        assert (end["id"], end["event"], end["seq"], end["reason"], end["source"]) == \
            ("a" * 32, "end", 2, "worker-lost", "director")
        assert end["key"] == f"{'a' * 32}:2" and end["ended_at"] >= lost_open["started_at"]

        assert reaper.step() == 0  # the end read back closes it: never sent twice
        assert client.exists(alerts_stream()) == 0  # nothing went to (or was read from) the default namespace
        gateway = ClusterCameras("127.0.0.1:1", pipeline)
        assert gateway.namespace == NAMESPACE and channel_patterns(gateway.namespace) == \
            [f"{NAMESPACE}:overlay:*", f"{NAMESPACE}:status:*"]
        survivor.close()
    finally:
        node.close()
        director_bus.close()


def test_a_bad_namespace_is_refused_and_nothing_is_opened(tmp_path: Path):
    from stream.config.serve import ConfigError, load_config

    cfg = tmp_path / "serve.yaml"
    cfg.write_text("redis: redis://127.0.0.1:6379/0\nredis_namespace: 'a b:*'\n")
    with pytest.raises(ConfigError, match="redis_namespace"):
        load_config(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serve.yaml"]
