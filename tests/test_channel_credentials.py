"""Channels with credentials, against the real servers: Mosquitto over TLS with a password file, Redis with
`requirepass` over TLS (with a client certificate), both signed by a CA made here. A wrong password is a clear
error naming its variable, the alerts wait in the spool, and once serve restarts with the right one every alert
arrives exactly once, in order. The secrets (right and wrong) never show in logs, status or errors, including
those of a real `dfstream serve` process."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from support.parts import import_or_require, needs
from support.polling import wait_for
from stream.config.channels import MqttConfig, RedisAuth
from stream.config.serve import ConfigError, ServeConfig, load_config
from stream.live.bus.channels import ChannelError, open_channels

from support import mqtt_broker
from support import redis_server
from support.live_server import free_port
from support.mqtt_broker import MqttBroker, Subscriber
from support.redis_server import RedisServer
from support.tls_certs import make_pki

pytestmark = [pytest.mark.slow, needs("mosquitto", mqtt_broker.unavailable_reason()),
              needs("redis-server", redis_server.unavailable_reason())]
REPO = Path(__file__).resolve().parents[1]
USER, RIGHT, WRONG = "dfstream", "right-Secret-7f3a", "wrong-Secret-91bd"
USER_ENV, PASSWORD_ENV = "DFSTREAM_TEST_BROKER_USER", "DFSTREAM_TEST_BROKER_PASSWORD"
ALERTS = 5
WAIT_S = 30.0
SERVE_START_S = 120.0


@pytest.fixture(autouse=True)
def _clients():
    import_or_require("paho.mqtt.client")
    import_or_require("redis")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def alert(i: int) -> dict:
    return {"v": 1, "type": "alert", "event": "start", "id": f"a{i}", "key": f"a{i}:1", "seq": 1, "stream": "cam",
            "ts": time.time()}


def env(password: str) -> dict[str, str]:
    return {USER_ENV: USER, PASSWORD_ENV: password}


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert RIGHT not in text and WRONG not in text, text[-2000:]


def test_mqtt_over_tls_with_a_password_file_waits_out_a_wrong_password_and_loses_nothing(tmp_path, pki, caplog):
    caplog.set_level(logging.DEBUG)
    config = MqttConfig(url="mqtts://127.0.0.1:1", username_env=USER_ENV, password_env=PASSWORD_ENV,
                        ca_file=pki.ca)
    with MqttBroker(tls=pki, users={USER: RIGHT}) as broker:
        config = config.model_copy(update={"url": broker.url})
        sub = Subscriber(broker.port, "dfstream/events", tls=pki, user=(USER, RIGHT))
        try:
            assert sub.subscribed.wait(10)
            wrong = open_channels([], config, tmp_path, env=env(WRONG))
            wrong.start()
            for i in range(ALERTS):
                wrong.publish(alert(i))
            stats = wait_for(lambda: (s := wrong.stats()["mqtt"])["spool"] == ALERTS and s["last_error"] and s,
                             WAIT_S, "five spooled events and the broker's refusal")
            assert "refused the connection" in stats["last_error"] and PASSWORD_ENV in stats["last_error"]
            assert not stats["connected"] and stats["events_sent"] == 0
            wrong.close()
            assert sub.messages() == [] and len((tmp_path / "mqtt-events.jsonl").read_text().splitlines()) == ALERTS

            right = open_channels([], config, tmp_path, env=env(RIGHT))  # serve restarted with the right password
            right.start()
            wait_for(lambda: len(sub.messages()) >= ALERTS, WAIT_S, "every spooled event at the subscriber")
            stats = right.stats()["mqtt"]
            right.close()
            time.sleep(0.5)  # a repeat would have arrived by now
            keys = [json.loads(p)["key"] for _, p, _ in sub.messages()]
            assert keys == [f"a{i}:1" for i in range(ALERTS)]  # all, once each, in order
            assert (tmp_path / "mqtt-events.jsonl").read_text() == ""
            assert_no_secret(caplog.text, json.dumps(stats), broker.log())
        finally:
            sub.close()


def test_mqtt_refuses_a_broker_whose_certificate_another_ca_signed(tmp_path, pki, caplog):
    with MqttBroker(tls=pki, users={USER: RIGHT}) as broker:
        config = MqttConfig(url=broker.url, username_env=USER_ENV, password_env=PASSWORD_ENV, ca_file=pki.other_ca)
        channels = open_channels([], config, tmp_path, env=env(RIGHT))
        channels.start()
        channels.publish(alert(0))
        stats = wait_for(lambda: (s := channels.stats()["mqtt"])["last_error"] and s, WAIT_S, "the TLS refusal")
        channels.close()
        assert "CERTIFICATE_VERIFY_FAILED" in stats["last_error"] and stats["spool"] == 1
        assert_no_secret(caplog.text, json.dumps(stats))


def test_redis_with_requirepass_over_tls_waits_out_a_wrong_password_and_loses_nothing(tmp_path, pki, caplog,
                                                                                       monkeypatch):
    from stream.live.bus.redis_bus import alerts_stream, connect, open_credentials
    from stream.live.server.service import open_redis

    caplog.set_level(logging.DEBUG)
    with RedisServer(password=RIGHT, tls=pki, client_certs=True) as server:
        auth = RedisAuth(password_env=PASSWORD_ENV, ca_file=pki.ca, cert_file=pki.client_cert,
                         key_file=pki.client_key)
        config = ServeConfig(redis=server.url, redis_auth=auth, data_dir=tmp_path)
        reader = connect(server.url, credentials=open_credentials(auth, {PASSWORD_ENV: RIGHT}), tls=auth)
        monkeypatch.setenv(PASSWORD_ENV, WRONG)
        wrong = open_redis(config)
        wrong.start()
        for i in range(ALERTS):
            wrong.publish(alert(i))
        stats = wait_for(lambda: (s := wrong.stats())["spool"] == ALERTS and s["last_error"] and s, WAIT_S,
                         "five spooled alerts and Redis's refusal")
        assert "refused the credentials" in stats["last_error"] and PASSWORD_ENV in stats["last_error"]
        assert not stats["redis_up"]
        wrong.close()
        assert reader.xlen(alerts_stream()) == 0

        monkeypatch.setenv(PASSWORD_ENV, RIGHT)  # serve restarted with the right password
        right = open_redis(config)
        right.start()
        wait_for(lambda: right.stats()["spool"] == 0 and right.stats()["redis_up"], WAIT_S, "the spool to drain")
        stats = right.stats()
        right.close()
        keys = [fields[b"key"].decode() for _, fields in reader.xrange(alerts_stream())]
        assert keys == [f"a{i}:1" for i in range(ALERTS)]  # all, once each, in order
        assert stats["alerts_sent"] == ALERTS and stats["alerts_duplicate"] == 0
        reader.close()
        assert_no_secret(caplog.text, json.dumps(stats))


def test_redis_without_the_client_certificate_it_asks_for_is_a_clear_error(tmp_path, pki, monkeypatch):
    from stream.live.server.service import open_redis

    with RedisServer(password=RIGHT, tls=pki, client_certs=True) as server:
        monkeypatch.setenv(PASSWORD_ENV, RIGHT)
        bus = open_redis(ServeConfig(redis=server.url, data_dir=tmp_path,
                                     redis_auth=RedisAuth(password_env=PASSWORD_ENV, ca_file=pki.ca)))
        bus.start()
        bus.publish(alert(0))
        stats = wait_for(lambda: (s := bus.stats())["last_error"] and s["spool"] == 1 and s, WAIT_S,
                         "the handshake's refusal")
        bus.close()
        assert not stats["redis_up"] and "ConnectionError" in stats["last_error"]
        assert_no_secret(json.dumps(stats))


def test_credential_refusals_name_the_variable_and_change_nothing(tmp_path, pki, monkeypatch):
    from stream.live.server.service import open_redis

    data = tmp_path / "data"
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    refusals = [
        (lambda: open_redis(ServeConfig(redis="redis://127.0.0.1:9/0", data_dir=data,
                                        redis_auth=RedisAuth(password_env=PASSWORD_ENV))), PASSWORD_ENV),
        (lambda: open_channels([], MqttConfig(url="mqtts://127.0.0.1:9", username_env=USER_ENV,
                                              password_env=PASSWORD_ENV), data, env={}), USER_ENV),
        (lambda: open_channels([], MqttConfig(url="mqtts://127.0.0.1:9", ca_file=tmp_path / "no-such-ca.pem"),
                               data), "no-such-ca.pem is not a readable file"),
        (lambda: open_channels([], MqttConfig(url="mqtts://127.0.0.1:9", ca_file=pki.server_key), data),
         "cannot load the TLS files"),
        (lambda: open_redis(ServeConfig(redis="rediss://127.0.0.1:9/0", data_dir=data, redis_auth=RedisAuth(
            cert_file=pki.client_cert, key_file=pki.server_key))), "cannot load the TLS files"),
    ]
    for make, said in refusals:
        with pytest.raises(ChannelError, match=said):
            make()
        assert not data.exists()
    cfg = tmp_path / "serve.yaml"
    for bad, said in [("redis: redis://h:6379/0\nredis_auth: {ca_file: /x.pem}\n", "need a rediss://"),
                      ("redis: rediss://h:6379/0\nredis_auth: {cert_file: /x.pem}\n", "cert_file and key_file"),
                      ("redis: rediss://h:6379/0\nredis_auth: {password: x}\n", "Extra inputs"),  # env only
                      ("mqtt: {url: 'mqtt://h', ca_file: /x.pem}\n", "need an mqtts://")]:
        cfg.write_text(bad)
        with pytest.raises(ConfigError, match=said):
            load_config(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serve.yaml"]


def _get(url: str, token: str) -> str:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as err:  # /readyz answers 503 when not ready: its body is what is checked
        return err.read().decode()


def test_a_real_serve_says_which_variable_is_wrong_and_never_shows_a_secret(tmp_path, pki):
    """The whole process: its log, /readyz (with the token) and /metrics, with wrong passwords for both."""
    with RedisServer(password=RIGHT, tls=pki) as rds, MqttBroker(tls=pki, users={USER: RIGHT}) as broker:
        port, token = free_port(), "soak-token-0123456789"
        cfg = tmp_path / "serve.yaml"
        cfg.write_text(yaml.safe_dump({
            "port": port, "data_dir": str(tmp_path / "data"), "weights_dir": str(REPO.parent / "shared" / "weights"
                                                                                 / "mesonet"),
            "token": token, "redis": rds.url, "redis_auth": {"password_env": "DFSTREAM_TEST_REDIS_PASSWORD",
                                                             "ca_file": str(pki.ca)},
            "mqtt": {"url": broker.url, "username_env": USER_ENV, "password_env": PASSWORD_ENV,
                     "ca_file": str(pki.ca)}}))
        log_path = tmp_path / "serve.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "stream", "serve", "--config", str(cfg), "--offline",
                                     "--log-level", "debug"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **env(WRONG), "DFSTREAM_TEST_REDIS_PASSWORD": WRONG})
            try:
                def refused() -> dict | None:
                    assert proc.poll() is None, log_path.read_text()[-3000:]
                    try:
                        body = json.loads(_get(f"http://127.0.0.1:{port}/readyz", token))
                    except OSError:
                        return None
                    mqtt = body.get("channels", {}).get("mqtt", {})
                    return body if body["checks"]["bus"].get("error") and mqtt.get("last_error") else None

                ready = json.dumps(wait_for(refused, SERVE_START_S, "serve to report both refusals", every=1.0))
                metrics = _get(f"http://127.0.0.1:{port}/metrics", token)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        text = log_path.read_text()
        assert "DFSTREAM_TEST_REDIS_PASSWORD" in ready and PASSWORD_ENV in ready  # the variable to fix, by name
        assert "refused the credentials" in text and "refused the connection" in text
        assert_no_secret(text, ready, metrics)
