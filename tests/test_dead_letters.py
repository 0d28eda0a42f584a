"""`dfstream alerts replay-dead-letters`: a webhook's dead letters, made by the real sender against a receiver that
refused them, are sent again to the fixed receiver (the real aiohttp one), signed, once each; a letter leaves the
file only once delivered; a second run sends nothing; a letter a running serve appends mid-replay is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support.polling import wait_for
from stream.config.channels import WebhookConfig
from stream.config.sources import Backoff
from stream.live.bus.channels import open_channels
from stream.live.bus.channels.webhook import DEAD_SUFFIX, WEBHOOKS_DIR
from stream.live.bus.dead_letters import DeadLetters
from support.webhook_receiver import Receiver

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SECRET_ENV = "DFSTREAM_TEST_REPLAY_SECRET"
SECRET = "replay-test-secret"
FAST_RETRY = Backoff(initial_s=0.05, factor=2.0, max_s=0.2, jitter=0.0)
LETTERS = 3


def alert(i: int) -> dict:
    return {"v": 1, "type": "alert", "event": "start", "id": f"a{i}", "key": f"a{i}:1", "seq": 1, "stream": "cam",
            "ts": time.time()}


def dead_letters(data: Path, url: str) -> Path:
    """Alerts the real webhook sender gave up on: its receiver checks signatures with another secret (401)."""
    hook = WebhookConfig(name="ops", url=url, secret_env=SECRET_ENV, max_attempts=2, backoff=FAST_RETRY)
    channels = open_channels([hook], None, data, env={SECRET_ENV: SECRET})
    channels.start()
    for i in range(LETTERS):
        channels.publish(alert(i))
    ops = channels.webhooks[0]
    wait_for(lambda: ops.stats()["dead_letters"] == LETTERS, 30, "three dead letters")
    channels.close()
    return data / WEBHOOKS_DIR / f"ops{DEAD_SUFFIX}"


def replay(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", "alerts", "replay-dead-letters", "ops", "--config",
                           str(cfg), *args], cwd=REPO, text=True, capture_output=True, timeout=120,
                          env={**os.environ, SECRET_ENV: SECRET})


def config_file(tmp_path: Path, data: Path, url: str) -> Path:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"data_dir: {data}\nalerts:\n  webhooks:\n    - name: ops\n      url: {url}\n"
                   f"      secret_env: {SECRET_ENV}\n")
    return cfg


def test_replay_sends_each_dead_letter_once_and_only_removes_what_was_delivered(tmp_path):
    data = tmp_path / "data"
    refusing = Receiver(b"another secret").up()
    try:
        dead = dead_letters(data, refusing.url)
        assert len(refusing.posts) == 2 * LETTERS and not refusing.processed
        cfg = config_file(tmp_path, data, refusing.url)
        before = dead.read_text()
        still = replay(cfg)  # the receiver still refuses: nothing leaves the file
        assert still.returncode == 1 and "0 of 3 delivered" in still.stdout and "HTTP 401" in still.stderr
        assert dead.read_text() == before
        refusing.down()
        gone = replay(cfg)  # the receiver is down: the same
        assert gone.returncode == 1 and "cannot connect" in gone.stderr and dead.read_text() == before
    finally:
        refusing.close()

    fixed = Receiver(SECRET.encode()).up()  # the receiver fixed: it takes the signature now
    try:
        cfg = config_file(tmp_path, data, fixed.url)
        done = replay(cfg)
        assert done.returncode == 0, done.stderr
        assert "3 of 3 delivered; 0 left" in done.stdout
        assert fixed.keys() == [f"a{i}:1" for i in range(LETTERS)]  # in the order they died
        assert len(fixed.posts) == LETTERS and all(p["signed"] and p["header_key"] == p["key"] for p in fixed.posts)
        assert dead.read_text() == ""
        again = replay(cfg)
        assert again.returncode == 0 and "no dead letters" in again.stdout
        assert len(fixed.posts) == LETTERS  # the second run sent nothing
    finally:
        fixed.close()


def test_a_letter_appended_by_serve_during_a_replay_is_kept(tmp_path):
    data = tmp_path / "data"
    refusing = Receiver(b"another secret").up()
    try:
        dead = dead_letters(data, refusing.url)
    finally:
        refusing.close()
    receiver = Receiver(SECRET.encode()).up()
    receiver.hold()  # the replay's first POST waits here...
    try:
        cfg = config_file(tmp_path, data, receiver.url)
        result: dict = {}
        run = threading.Thread(target=lambda: result.update(done=replay(cfg)))
        run.start()
        wait_for(lambda: receiver.arrived == 1, 120, "the replay's first POST")  # it has read the file
        late = {"dead_at": time.time(), "attempts": 12, "error": "HTTP 500", "webhook": "ops", "msg": alert(9)}
        DeadLetters(dead).append(late)  # what a running serve's sender does meanwhile
        receiver.release()
        run.join(120)
        assert result["done"].returncode == 0, result["done"].stderr
        assert receiver.keys() == [f"a{i}:1" for i in range(LETTERS)]
        assert [json.loads(line) for line in dead.read_text().splitlines()] == [late]
    finally:
        receiver.close()


def test_replay_refusals_change_nothing(tmp_path):
    data = tmp_path / "data"
    refusing = Receiver(b"another secret").up()
    try:
        dead = dead_letters(data, refusing.url)
        cfg = config_file(tmp_path, data, refusing.url)
        before, posts = dead.read_text(), len(refusing.posts)
        for args, env, said in [(["nope"], {}, "no webhook named 'nope'"),
                                (["ops"], {SECRET_ENV: ""}, SECRET_ENV)]:
            done = subprocess.run([sys.executable, "-m", "stream", "alerts", "replay-dead-letters", *args,
                                   "--config", str(cfg)], cwd=REPO, text=True, capture_output=True, timeout=120,
                                  env={**os.environ, **env})
            assert done.returncode == 2 and said in done.stderr, done.stderr
        bad = tmp_path / "bad.yaml"
        bad.write_text("alerts: [")
        done = replay(bad)
        assert done.returncode == 2 and "cannot read config" in done.stderr
        assert dead.read_text() == before and len(refusing.posts) == posts
    finally:
        refusing.close()
