"""MQTT in Frigate's style against a real Mosquitto: a real serve on the shared Deepfakes clip publishes its
alerts on dfstream/events and a retained verdict per stream; alerts raised while the broker is down are spooled
and arrive in order once it is back; and a killed serve is announced `offline` by its last will."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from support.polling import log_alerts, wait_for
from support.parts import import_or_require, needs

from engines.quality import QualityFloor
from engines.registry import DEFAULT_MODEL, build_engine
from stream.config.channels import MqttConfig
from stream.config.serve import ConfigError, load_config
from stream.live.bus.channels import ChannelError, open_channels
from stream.config.serve import ServeConfig
from stream.live.sources.live import SourceConfig
from stream.live.verdicts.alerts import AlertPolicy
from stream.live.verdicts.policy import VerdictPolicy

from support.shared import FFPP, MESONET_WEIGHTS
from support.live_server import LiveServer, free_port
from support.serve_fakes import ClipFace
from support.mqtt_broker import MqttBroker, Subscriber, unavailable_reason

pytestmark = [pytest.mark.slow, needs("mosquitto", unavailable_reason())]
REPO = Path(__file__).resolve().parents[1]
ALERT_WAIT_S = 180.0
MIN_OUTAGE_S = 2.0
TWITCHY = VerdictPolicy(smoothing="ema", ema_alpha=1.0, t_high=0.9, t_low=0.85, k=1)
SOURCE = SourceConfig(name="df", url=str(FFPP / "fake" / "Deepfakes_519_515.mp4"), loop=True)
VERDICTS = {"real", "uncertain", "fake", "none"}


@pytest.fixture(autouse=True)
def _paho():
    import_or_require("paho.mqtt.client")


def first_keys(sub: Subscriber) -> list[str]:
    """Event keys in arrival order, each at its first arrival (a subscriber dedupes by key)."""
    out: list[str] = []
    for _, payload, _ in sub.messages("dfstream/events"):
        key = json.loads(payload)["key"]
        if key not in out:
            out.append(key)
    return out


def test_events_retained_verdict_and_in_order_replay_after_a_broker_restart(tmp_path):
    engine = build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)
    engine.quality = QualityFloor()  # the channel is under test, not the quality gate
    with MqttBroker(persistent=True) as broker:
        # a persistent session: the broker keeps this subscriber's QoS 1 messages across its own restart
        events = Subscriber(broker.port, ["dfstream/events", "dfstream/available"], client_id="events-watcher",
                            persistent=True)
        config = ServeConfig(sources=[SOURCE], data_dir=tmp_path, verdict=TWITCHY,
                             alerts=AlertPolicy(update_every_s=0.5), mqtt=MqttConfig(url=broker.url))
        late = None
        try:
            with LiveServer(config, [engine], ClipFace.of(SOURCE.url)) as server:  # detection is not under test
                wait_for(lambda: first_keys(events), ALERT_WAIT_S, "the first alert on dfstream/events")
                first = json.loads(events.messages("dfstream/events")[0][1])
                assert first["type"] == "alert" and first["stream"] == "df" and first["event"] == "start"
                assert ("dfstream/available", "online", False) in events.messages()

                late = Subscriber(broker.port, ["dfstream/df/verdict", "dfstream/df/status"])
                wait_for(lambda: len(late.messages()) >= 2, 10, "the retained verdict and status")
                retained = {}  # each topic's first message: the retained one, sent at subscription
                for t, p, r in late.messages():
                    retained.setdefault(t, (p, r))
                assert retained["dfstream/df/verdict"][1] and retained["dfstream/df/verdict"][0] in VERDICTS
                assert retained["dfstream/df/status"] == ("streaming", True)
                late.close()
                late = None

                channel = server.service.channels.mqtt
                broker.kill()
                killed = time.time()
                time.sleep(MIN_OUTAGE_S)
                server.service.remove("df")  # ends the open alert; added again, the stream starts a new one
                server.service.add_config(SOURCE)
                wait_for(lambda: any(a["ts"] > killed and a["event"] == "start" for a in log_alerts(tmp_path)),
                         ALERT_WAIT_S, "an alert while the broker is down")
                assert channel.stats()["spool"] > 0 and not channel.stats()["connected"]
                broker.start()
                wait_for(lambda: channel.stats()["spool"] == 0 and channel.stats()["connected"], 60,
                         "the spool to drain once the broker is back")
                raised = [a["key"] for a in log_alerts(tmp_path)]
                wait_for(lambda: len(first_keys(events)) >= len(raised), 30, "every alert at the subscriber")
                assert first_keys(events)[:len(raised)] == raised  # none lost, in the order raised
                assert any(a["ts"] > killed for a in log_alerts(tmp_path) if a["key"] in raised)

                late = Subscriber(broker.port, "dfstream/df/verdict")  # republished to the restarted broker
                wait_for(lambda: late.messages(), 10, "the retained verdict after the broker restart")
                assert late.messages()[0][2]
            wait_for(lambda: events.messages("dfstream/available")[-1][1] == "offline", 10, "offline at shutdown")
        finally:
            events.close()
            if late is not None:
                late.close()


def test_the_last_will_says_offline_when_serve_is_killed(tmp_path):
    with MqttBroker() as broker:
        cfg = tmp_path / "serve.yaml"
        cfg.write_text(yaml.safe_dump({"port": free_port(), "data_dir": str(tmp_path / "data"),
                                       "models": [DEFAULT_MODEL], "weights_dir": str(MESONET_WEIGHTS),
                                       "mqtt": {"url": broker.url, "topic_prefix": "site1"}}))
        watch = Subscriber(broker.port, "site1/available")
        log = open(tmp_path / "serve.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "stream", "serve", "--config", str(cfg), "--offline"],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "DFSTREAM_DATA": str(tmp_path / "data")})
        try:
            wait_for(lambda: [p for _, p, _ in watch.messages()][-1:] == ["online"] or proc.poll() is not None,
                     120, "serve online")
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            log.flush()
            assert f"alert channels: mqtt 127.0.0.1:{broker.port} (site1/...)" in (tmp_path / "serve.log").read_text()
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            wait_for(lambda: [p for _, p, _ in watch.messages()][-1:] == ["offline"], 30, "the last will")
            late = Subscriber(broker.port, "site1/available")
            wait_for(lambda: late.messages(), 10, "the retained availability")
            assert late.messages()[0][1:] == ("offline", True)
            late.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            log.close()
            watch.close()


def _alert(i: int) -> dict:
    return {"v": 1, "type": "alert", "event": "update", "id": "a", "key": f"a:{i}", "seq": i, "stream": "cam"}


def test_events_raised_before_the_broker_exists_survive_a_restart_and_arrive_in_order(tmp_path):
    from stream.live.bus.channels.mqtt import SPOOL_NAME, MqttChannel

    port = free_port()
    config = MqttConfig(url=f"mqtt://127.0.0.1:{port}")
    first = MqttChannel(config, tmp_path)
    first.start()
    for i in range(3):
        first.publish(_alert(i))
    wait_for(lambda: first.stats()["spool"] == 3, 10, "three spooled events")
    first.close()  # serve stops before any broker was reachable: the events stay on disk
    assert len((tmp_path / SPOOL_NAME).read_text().splitlines()) == 3
    with MqttBroker(port=port) as broker:
        sub = Subscriber(broker.port, "dfstream/events")
        try:
            assert sub.subscribed.wait(10)
            second = MqttChannel(config, tmp_path)  # the next run
            second.start()
            for i in range(3, 5):
                second.publish(_alert(i))
            wait_for(lambda: len(sub.messages()) >= 5, 30, "five events")
            second.close()
            assert [json.loads(p)["key"] for _, p, _ in sub.messages()] == [f"a:{i}" for i in range(5)]
            assert (tmp_path / SPOOL_NAME).read_text() == ""
        finally:
            sub.close()


def test_mqtt_config_refusals_change_nothing(tmp_path):
    cfg = tmp_path / "serve.yaml"
    for bad, said in [("mqtt:\n  url: http://broker:1883\n", "mqtt://host"),
                      ("mqtt:\n  url: mqtt://broker\n  password: hunter2\n", r"password\s+Extra inputs are not permitted"),  # secrets: env only
                      ("mqtt:\n  url: mqtt://broker\n  topic_prefix: 'a/#'\n", "topic_prefix"),
                      ("mqtt:\n  url: mqtt://broker\n  password_env: PW\n", "needs username_env")]:
        cfg.write_text(bad)
        with pytest.raises(ConfigError, match=said):
            load_config(cfg)
    config = MqttConfig(url="mqtt://127.0.0.1:9", username_env="DFSTREAM_TEST_UNSET_USER")
    with pytest.raises(ChannelError, match="DFSTREAM_TEST_UNSET_USER"):
        open_channels([], config, tmp_path / "data", env={})
    assert not (tmp_path / "data").exists()
