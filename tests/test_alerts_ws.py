"""`dfstream alerts --ws` against a real serve on the shared Deepfakes clip: each alert prints once even when
the connection is cut and the server replays its open and recent alerts on reconnect, and a wrong token or a
server that is gone is said in words."""

import time

import pytest

from support.parts import import_or_require

from engines.quality import QualityFloor
from engines.registry import DEFAULT_MODEL, build_engine
from stream.config.serve import ServeConfig
from stream.live.sources.live import SourceConfig
from stream.live.verdicts.alerts import AlertPolicy
from stream.live.verdicts.policy import VerdictPolicy

from support.shared import FFPP, MESONET_WEIGHTS
from support.live_server import LiveServer, free_port
from support.serve_fakes import ClipFace
from support.tcp_proxy import TcpProxy
from test_bus import Cli
from test_webhooks import log_alerts, wait_for

pytestmark = pytest.mark.slow
TOKEN = "ws-follow-token"
ALERT_WAIT_S = 180.0
TWITCHY = VerdictPolicy(smoothing="ema", ema_alpha=1.0, t_high=0.9, t_low=0.85, k=1)
SOURCE = SourceConfig(name="df", url=str(FFPP / "fake" / "Deepfakes_519_515.mp4"), loop=True)


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    import_or_require("websockets")
    engine = build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)
    engine.quality = QualityFloor()  # the transport is under test, not the quality gate
    proxy_port = free_port()
    data = tmp_path_factory.mktemp("ws-follow")
    config = ServeConfig(host="127.0.0.2", token=TOKEN, sources=[SOURCE], data_dir=data, verdict=TWITCHY,
                         alerts=AlertPolicy(update_every_s=0.5), allowed_hosts=[f"127.0.0.1:{proxy_port}"])
    with LiveServer(config, [engine], ClipFace.of(SOURCE.url)) as server:  # detection is not under test
        yield server, data, proxy_port


def drain(cli: Cli, timeout: float) -> list[dict]:
    """Every alert the follower prints within `timeout`."""
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            out += cli.read(1, timeout=max(0.05, deadline - time.monotonic()))
        except AssertionError:
            break
    return out


def test_each_alert_prints_once_across_a_forced_reconnect(serve):
    server, data, proxy_port = serve
    wait_for(lambda: len(log_alerts(data)) >= 2, ALERT_WAIT_S, "the first alerts")
    # a proxy in front of serve, on the port serve was told to answer to as a Host (allowed_hosts)
    with TcpProxy("127.0.0.2", server.config.port, port=proxy_port) as proxy:
        follower = Cli("--ws", f"ws://127.0.0.1:{proxy_port}/ws", "--token", TOKEN, "--follow", "--json",
                       "--stream", "df")
        try:
            printed = follower.read(1, timeout=60)  # the replay of open and recent alerts comes at once
            latest = log_alerts(data)[-1]["key"]
            deadline = time.monotonic() + 60
            while latest not in {a["key"] for a in printed} and time.monotonic() < deadline:
                printed += drain(follower, 1.0)
                latest = log_alerts(data)[-1]["key"]
            assert latest in {a["key"] for a in printed}
            proxy.cut()  # the server will replay `latest` (its alert's newest message) on reconnect
            cut = time.time()
            wait_for(lambda: proxy.connections >= 2, 30, "the follower to reconnect")
            server.service.remove("df")  # ends the open alert; added again, the stream starts a new one
            server.service.add_config(SOURCE)
            wait_for(lambda: any(a["ts"] > cut and a["event"] == "start" for a in log_alerts(data)), ALERT_WAIT_S,
                     "an alert after the reconnect")
            new = log_alerts(data)[-1]["key"]
            deadline = time.monotonic() + 60
            while new not in {a["key"] for a in printed} and time.monotonic() < deadline:
                printed += drain(follower, 1.0)
            printed += drain(follower, 1.0)
            keys = [a["key"] for a in printed]
            assert new in keys, "the follower printed nothing after the reconnect"
            assert len(keys) == len(set(keys)), f"a replayed alert was printed twice: {keys}"
            raised = log_alerts(data)
            assert set(keys) <= {a["key"] for a in raised}
            # every alert raised before the last one printed reached the follower (at least its newest message)
            assert {a["id"] for a in raised if a["ts"] <= printed[-1]["ts"]} <= {a["id"] for a in printed}
            assert "reconnecting" in "".join(follower.err)
        finally:
            assert follower.interrupt() == 0


def test_a_wrong_or_missing_token_is_said_in_words(serve):
    server, _, _ = serve
    url = f"ws://127.0.0.2:{server.config.port}/ws"
    wrong = Cli("--ws", url, "--token", "not-the-token", "--follow")
    rc, out = wrong.finish()
    assert rc == 2 and out == [] and "401" in "".join(wrong.err) and "token is wrong" in "".join(wrong.err)
    missing = Cli("--ws", url, "--follow")
    rc, _ = missing.finish()
    assert rc == 2 and "needs a token: pass --token" in "".join(missing.err)


def test_a_server_that_is_gone_is_said_in_words_and_retried_while_following():
    url = f"ws://127.0.0.1:{free_port()}/ws"
    once = Cli("--ws", url)
    rc, _ = once.finish()
    assert rc == 2 and "the server is gone" in "".join(once.err)
    follow = Cli("--ws", url, "--follow")
    wait_for(lambda: "".join(follow.err).count("reconnecting in") >= 2, 30, "two retries")
    assert follow.interrupt() == 0


def test_without_follow_it_prints_the_replay_once_and_ends(serve):
    server, data, _ = serve
    wait_for(lambda: log_alerts(data), ALERT_WAIT_S, "an alert")
    once = Cli("--ws", f"ws://127.0.0.2:{server.config.port}/ws", "--token", TOKEN, "--json", "--stream", "df")
    rc, out = once.finish()
    keys = [a["key"] for a in out]
    assert rc == 0 and keys and len(keys) == len(set(keys)) and set(keys) <= {a["key"] for a in log_alerts(data)}
    other = Cli("--ws", f"ws://127.0.0.2:{server.config.port}/ws", "--token", TOKEN, "--json", "--stream", "nope")
    assert other.finish() == (0, [])  # another stream's filter: nothing of df


def test_flag_refusals_are_said_in_words(capsys):
    from stream.cli import alerts

    for args, said in [(["--ws", "http://127.0.0.1:1/ws"], "must be ws://"),
                       (["--ws", "ws://127.0.0.1:1/ws", "--redis", "redis://127.0.0.1:1/0"], "do not apply"),
                       (["--token", "t"], "need --ws"), (["--stream", "df"], "need --ws")]:
        assert alerts.main(args) == 2
        out, err = capsys.readouterr()
        assert out == "" and said in err, (args, err)
