"""The director's table in a real Redis (stream/cluster/state.py): written when it changes, read back by a new
director, which refuses every change, and changes nothing, until it could read it."""

from __future__ import annotations

import asyncio
import json

import pytest

from support.parts import import_or_require, needs
from support.redis_server import RedisServer, free_port, unavailable_reason
from stream.cluster.state import DirectorState, StateStore

pytestmark = needs("redis-server", unavailable_reason())


@pytest.fixture
def server():
    import_or_require("redis")
    with RedisServer() as srv:
        yield srv


def test_the_table_is_written_when_it_changes_and_read_back(server):
    import redis

    store = StateStore(server.url, "site-a")
    state = DirectorState(store)
    assert state.load() is None  # a first start
    doc = {"pipeline": None, "table": {"cameras": [{"name": "c", "url": "/c.mp4"}], "assigned": {"c": "n1"}}}
    assert state.save(doc) is True and state.save(doc) is False  # unchanged: not written again
    again = DirectorState(store).load()
    assert again["table"] == doc["table"] and again["format"] == "dfstream-director/1"
    client = redis.Redis.from_url(server.url)
    client.set("site-b:director", json.dumps({"format": "something-else/9"}))
    with pytest.raises(ValueError, match="another --cluster-name"):
        DirectorState(StateStore(server.url, "site-b")).load()
    assert json.loads(client.get("site-b:director")) == {"format": "something-else/9"}  # left as it was


@pytest.mark.ray  # imports stream.cluster.director, a Ray actor module
def test_a_director_restores_cameras_and_nodes_and_refuses_changes_until_it_can(server):
    import_or_require("ray")  # stream.cluster.director is a Ray actor module
    from stream.cluster.director import Director, StateUnavailable

    # a director that cannot reach its Redis: every change refused, nothing written
    down = Director({"url": f"redis://127.0.0.1:{free_port()}/0", "name": "site-a"})
    with pytest.raises(StateUnavailable, match="nothing was changed"):
        asyncio.run(down.add({"name": "c", "url": "/c.mp4"}))
    assert down.table.cameras == {} and asyncio.run(down.status())["director"]["loaded"] is False

    store = {"url": server.url, "name": "site-a"}
    first = Director(store)
    assert first.restore()  # nothing saved yet: an empty table is the right one
    first.table.add({"name": "c", "url": "/c.mp4"})
    first.table.assign({"c": "node-1"})
    first.members.remembered = {"node-1": ("dfstream-ab", "host-1-abc")}
    first.members.drained.add("dfstream-gone")
    first.persist()

    second = Director(store)  # the head was lost: Ray restarts the director, which reads its table
    assert second.restore()
    assert second.table.cameras == {"c": {"name": "c", "url": "/c.mp4"}} and second.table.assigned == {"c": "node-1"}
    assert second.members.remembered == {"node-1": ("dfstream-ab", "host-1-abc")}
    assert second.members.drained == {"dfstream-gone"} and second.restored == 1


@pytest.mark.ray  # StateStore.forget cleans the GCS namespace through Ray
def test_forgetting_the_state_deletes_this_clusters_keys_only(server):
    import redis

    client = redis.Redis.from_url(server.url)
    keep = ["site-b:director", "RAYsite-b@node", "dfstream:alerts", "site-a", "RAYsite-ab@x"]
    for key in [*keep, "site-a:director", "RAYsite-a@node_table", "RAYsite-a@actor_table"]:
        client.set(key, b"1")
    StateStore(server.url, "site-a").forget()
    assert sorted(k.decode() for k in client.keys("*")) == sorted(keep)


def test_forget_state_without_redis_is_refused(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-m", "stream", "cluster", "head", "--forget-state", "--port", "1"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "DFSTREAM_DATA": str(tmp_path)})
    assert out.returncode == 2 and "--forget-state needs --redis" in out.stderr
    assert not list(tmp_path.iterdir())
