"""Signed webhooks end to end: a real serve on the shared Deepfakes clip POSTs its alerts to a real aiohttp
receiver, signed, in order, once per key, across a receiver outage and across a restart of serve itself."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines.quality import QualityFloor
from engines.registry import DEFAULT_MODEL, build_engine
from stream.config.channels import WebhookConfig
from stream.config.serve import ConfigError, ServeConfig, load_config
from stream.config.sources import Backoff
from stream.live.bus.channels import ChannelError, open_channels
from stream.live.bus.channels.webhook import DEAD_SUFFIX, QUEUE_SUFFIX, WEBHOOKS_DIR
from stream.live.sources.live import SourceConfig
from stream.live.verdicts.alerts import AlertPolicy
from stream.live.verdicts.policy import VerdictPolicy
from stream.messages import Alert

from support.polling import log_alerts, wait_for
from support.shared import FFPP, MESONET_WEIGHTS
from support.live_server import LiveServer
from support.serve_fakes import ClipFace, NoFaces
from support.webhook_receiver import Receiver

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SECRET_ENV = "DFSTREAM_TEST_HOOK_SECRET"
SECRET = "webhook-test-secret"
ALERT_WAIT_S = 180.0
TWITCHY = VerdictPolicy(smoothing="ema", ema_alpha=1.0, t_high=0.9, t_low=0.85, k=1)
FAST_RETRY = Backoff(initial_s=0.2, factor=2.0, max_s=1.0, jitter=0.2)  # the test waits seconds, not minutes
SOURCE = SourceConfig(name="df", url=str(FFPP / "fake" / "Deepfakes_519_515.mp4"), loop=True)


def hook_config(receiver: Receiver, **kw) -> WebhookConfig:
    return WebhookConfig(name="ops", url=receiver.url, secret_env=SECRET_ENV, backoff=FAST_RETRY, **kw)


@pytest.fixture(scope="module")
def secret_env():
    old = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = SECRET
    yield SECRET.encode()
    if old is None:
        os.environ.pop(SECRET_ENV, None)
    else:
        os.environ[SECRET_ENV] = old


@pytest.fixture(scope="module")
def engine():
    e = build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)
    e.quality = QualityFloor()  # the channel is under test, not the quality gate: every face counts
    return e


def test_alerts_are_delivered_signed_once_across_a_receiver_outage_and_a_serve_restart(tmp_path, secret_env, engine):
    receiver = Receiver(secret_env).up()
    try:
        config = ServeConfig(sources=[SOURCE], data_dir=tmp_path, verdict=TWITCHY,
                             alerts=AlertPolicy(update_every_s=0.5, webhooks=[hook_config(receiver)]))
        server = LiveServer(config, [engine], ClipFace.of(SOURCE.url)).__enter__()  # detection is not under test
        try:
            wait_for(lambda: receiver.keys(), ALERT_WAIT_S, "the first alert at the receiver")
            first = receiver.posts[0]
            assert first["signed"] and first["header_key"] == first["key"] == first["msg"]["key"]
            assert first["msg"]["type"] == "alert" and first["msg"]["stream"] == "df"

            # receiver down: alerts raised meanwhile wait in the queue
            receiver.down()
            downed = time.time()
            server.service.remove("df")  # ends the open alert; the stream added again starts a new one
            server.service.add_config(SOURCE)
            wait_for(lambda: any(a["ts"] > downed and a["event"] == "start" for a in log_alerts(tmp_path)),
                     ALERT_WAIT_S, "a new alert while the receiver is down")
            hook = server.service.channels.webhooks[0]
            wait_for(lambda: hook.stats()["failed_attempts"] > 0, 30, "a failed delivery")
            assert hook.stats()["queued"] > 0
            receiver.up()
            wait_for(lambda: hook.stats()["queued"] == 0, 60, "the queue to drain after the receiver returned")
            raised = [a["key"] for a in log_alerts(tmp_path)]  # the pipeline goes on raising: compare a prefix
            wait_for(lambda: len(receiver.keys()) >= len(raised), 30, "the alerts raised so far")
            assert receiver.keys()[:len(raised)] == raised  # none lost, in order, each processed once

            # receiver down again, then serve stops with deliveries pending: they wait on disk for the next run
            receiver.down()
            downed = time.time()
            server.service.remove("df")
            server.service.add_config(SOURCE)
            wait_for(lambda: any(a["ts"] > downed and a["event"] == "start" for a in log_alerts(tmp_path)),
                     ALERT_WAIT_S, "an alert pending when serve stops")
        finally:
            server.__exit__(None, None, None)  # ends open alerts: each an `end` the receiver has not had
        raised = log_alerts(tmp_path)
        pending = [a["key"] for a in raised if a["key"] not in set(receiver.keys())]
        assert any(a["ts"] > downed for a in raised if a["key"] in pending), \
            "no alert was pending when serve stopped: the test proved nothing"
        queue = tmp_path / WEBHOOKS_DIR / f"ops{QUEUE_SUFFIX}"
        assert [json.loads(line)["key"] for line in queue.read_text().splitlines()] == pending
        receiver.up()
        restarted = ServeConfig(data_dir=tmp_path, alerts=AlertPolicy(webhooks=[hook_config(receiver)]))
        with LiveServer(restarted, [engine], NoFaces()):  # no sources
            wait_for(lambda: receiver.keys()[-len(pending):] == pending, 60, "the pending alerts after the restart")
        assert receiver.keys() == [a["key"] for a in raised]
        assert all(p["signed"] and p["header_key"] == p["key"] for p in receiver.posts)
        assert queue.read_text() == "" and not (tmp_path / WEBHOOKS_DIR / f"ops{DEAD_SUFFIX}").exists()
    finally:
        receiver.close()


def test_a_receiver_that_never_takes_an_alert_gets_it_dead_lettered_and_reported(tmp_path, secret_env, engine):
    receiver = Receiver(b"another secret").up()  # checks signatures with the wrong secret: refuses every POST
    try:
        config = ServeConfig(data_dir=tmp_path, alerts=AlertPolicy(webhooks=[hook_config(receiver, max_attempts=2)]))
        with LiveServer(config, [engine], NoFaces()) as server:  # no sources
            alert = Alert(event="start", id="a1", seq=0, stream="df", track=1, started_at=time.time(),
                          ended_at=None, score_max=0.95, engines={}, evidence={})
            server.service.bus.publish(alert)  # through the bus, as the alert lifecycle publishes
            server.service.bus.publish(dataclasses.replace(alert, event="end", seq=1, ended_at=time.time()))
            hook = server.service.channels.webhooks[0]
            wait_for(lambda: hook.stats()["dead_letters"] == 2, 30, "two dead letters")
            status, metrics = server.api("GET", "/metrics")
            assert status == 200
            assert 'dfstream_webhook_dead_letters{webhook="ops"} 2.0' in metrics
            assert 'dfstream_webhook_queue_depth{webhook="ops"} 0.0' in metrics
            assert 'dfstream_webhook_failed_attempts_total{webhook="ops"} 4.0' in metrics
            status, ready = server.api("GET", "/readyz")
            ops = json.loads(ready)["channels"]["webhooks"]["ops"]
            assert ops["dead_letters"] == 2 and ops["delivered"] == 0 and "HTTP 401" in ops["last_error"]
            assert receiver.url not in ops["last_error"]  # a hook's path can be its secret: never shown
        dead = [json.loads(line) for line in (tmp_path / WEBHOOKS_DIR / f"ops{DEAD_SUFFIX}").read_text().splitlines()]
        assert [d["msg"]["key"] for d in dead] == ["a1:0", "a1:1"] and all(d["attempts"] == 2 for d in dead)
        assert len(receiver.posts) == 4 and not receiver.processed
    finally:
        receiver.close()


def test_filters_pick_streams_events_and_scores(tmp_path, secret_env):
    receiver = Receiver(secret_env).up()
    try:
        hook = hook_config(receiver, streams=["cam1"], events=["start"], min_score=0.8)
        channels = open_channels([hook], None, tmp_path)
        channels.start()
        base = {"v": 1, "type": "alert", "id": "x"}
        for i, (stream, event, score) in enumerate([("cam1", "start", 0.9), ("cam2", "start", 0.9),
                                                    ("cam1", "end", 0.9), ("cam1", "start", 0.5),
                                                    ("cam1", "start", 0.8)]):
            channels.publish({**base, "key": f"x:{i}", "stream": stream, "event": event, "score_max": score})
        channels.publish({"type": "overlay", "stream": "cam1", "verdict": "fake"})  # never a webhook
        wait_for(lambda: len(receiver.keys()) >= 2, 30, "two deliveries")
        channels.close()
        assert receiver.keys() == ["x:0", "x:4"]
    finally:
        receiver.close()


def test_a_stuck_receiver_holds_back_neither_the_publisher_nor_another_hook(tmp_path, secret_env):
    stuck, fast = Receiver(secret_env).up(), Receiver(secret_env).up()
    try:
        stuck.hold()
        hooks = [WebhookConfig(name="stuck", url=stuck.url, secret_env=SECRET_ENV, timeout_s=60),
                 WebhookConfig(name="fast", url=fast.url, secret_env=SECRET_ENV)]
        channels = open_channels(hooks, None, tmp_path)
        channels.start()
        keys = [f"s:{i}" for i in range(5)]
        for key in keys:  # returns at once although the stuck receiver has not answered the first POST
            channels.publish({"v": 1, "type": "alert", "event": "start", "id": "s", "key": key, "stream": "df"})
        wait_for(lambda: fast.keys() == keys, 30, "every alert at the fast receiver")
        assert stuck.keys() == [] and channels.stats()["webhooks"]["stuck"]["queued"] == 5
        stuck.release()
        wait_for(lambda: stuck.keys() == keys, 30, "every alert at the released receiver")
        channels.close()
    finally:
        stuck.release()
        stuck.close()
        fast.close()


def test_webhook_config_refusals(tmp_path):
    cfg = tmp_path / "serve.yaml"
    hook = "alerts:\n  webhooks:\n    - url: {url}\n      secret_env: S\n{extra}"
    for url, extra, said in [("ftp://h/x", "", "http:// or https://"),
                             ("http://h/x", "      secret: in-the-file\n", r"secret\s+Extra inputs are not permitted"),  # the secret: env only
                             ("http://h/x", "      min_score: 2\n", "min_score"),
                             ("http://h/x", "      events: [begin]\n", "events"),
                             ("http://h/x", "    - url: http://h/y\n      secret_env: S\n", "unique")]:
        cfg.write_text(hook.format(url=url, extra=extra))
        with pytest.raises(ConfigError, match=said):
            load_config(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serve.yaml"]


def test_a_secret_variable_that_is_not_set_is_refused_before_anything_is_opened(tmp_path):
    hook = WebhookConfig(name="ops", url="http://127.0.0.1:9/hook", secret_env="DFSTREAM_TEST_UNSET_SECRET")
    with pytest.raises(ChannelError, match="DFSTREAM_TEST_UNSET_SECRET"):
        open_channels([hook], None, tmp_path, env={})
    assert list(tmp_path.iterdir()) == []


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "stream.cli.alerts", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=60, env={**os.environ, **(env or {})})


def test_test_webhook_sends_one_signed_test_event(tmp_path, secret_env):
    receiver = Receiver(secret_env).up()
    try:
        cfg = tmp_path / "serve.yaml"
        cfg.write_text(f"alerts:\n  webhooks:\n    - name: ops\n      url: {receiver.url}\n"
                       f"      secret_env: {SECRET_ENV}\n")
        done = _cli("test-webhook", "ops", "--config", str(cfg))
        assert done.returncode == 0, done.stderr
        assert len(receiver.posts) == 1 and receiver.posts[0]["signed"]
        assert receiver.posts[0]["msg"]["event"] == "test" and receiver.posts[0]["header_key"] in done.stdout

        unknown = _cli("test-webhook", "nope", "--config", str(cfg))
        assert unknown.returncode == 2 and "no webhook named 'nope'" in unknown.stderr and "ops" in unknown.stderr
        unset = _cli("test-webhook", "ops", "--config", str(cfg), env={SECRET_ENV: ""})
        assert unset.returncode == 2 and SECRET_ENV in unset.stderr
        receiver.down()
        gone = _cli("test-webhook", "ops", "--config", str(cfg))
        assert gone.returncode == 1 and "did not take the test event" in gone.stderr
        assert len(receiver.posts) == 1  # the refusals sent nothing
    finally:
        receiver.close()
