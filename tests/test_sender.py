"""The one spooled sender that Redis, the webhooks and MQTT use, driven through a channel written here (a `Link`
whose far end the test controls): durable messages survive a restart in order, retries back off but never beyond
the cap, a message the far end never takes is dead-lettered and stops holding back the rest, publishing never
waits on a delivery, and lossy messages are bounded and resume once a far end that was down answers again."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from stream.config.sources import Backoff
from stream.live.bus.sender import Link, SenderPolicy, SpooledSender

from support.polling import wait_for

QUICK = Backoff(initial_s=0.01, factor=2.0, max_s=0.05, jitter=0.0)


def alert(key: str) -> dict:
    return {"v": 1, "type": "alert", "event": "start", "id": key, "key": key, "stream": "cam"}


def overlay(i: int) -> dict:
    return {"v": 1, "type": "overlay", "stream": "cam", "i": i}


class FarEnd(Link):
    """A channel whose far end takes messages while `up`, refuses the keys in `refuse`, and can be held."""

    name = kind = "test"

    def __init__(self, up: bool = True) -> None:
        self.taking = up
        self.refuse: set[str] = set()
        self.delivered: list[str] = []
        self.lossy: list[int] = []
        self.attempts: list[tuple[float, str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.in_delivery = threading.Event()
        self.link_up = True

    @property
    def up(self) -> bool:
        return self.link_up

    def deliver(self, msg: dict) -> str | None:
        self.in_delivery.set()
        self.gate.wait()
        self.attempts.append((time.monotonic(), msg["key"]))
        if not self.taking:
            self.link_up = False
            return "far end down"
        if msg["key"] in self.refuse:
            return "refused: 400"
        self.link_up = True
        self.delivered.append(msg["key"])
        return None

    def send_lossy(self, msg: dict) -> str | None:
        if not self.taking:
            self.link_up = False
            return "far end down"
        self.lossy.append(msg["i"])
        return None

    def probe(self) -> str | None:
        self.link_up = self.taking
        return None if self.taking else "far end down"


def sender(tmp_path: Path, link: FarEnd, **policy) -> SpooledSender:
    s = SpooledSender(link, tmp_path / "spool.jsonl", SenderPolicy(backoff=QUICK, close_timeout_s=5, **policy),
                      dead_path=tmp_path / "dead.jsonl")
    s.start()
    return s


def test_spooled_messages_survive_a_restart_and_go_out_in_order(tmp_path):
    down = FarEnd(up=False)
    first = sender(tmp_path, down)
    for i in range(3):
        first.publish(alert(f"a:{i}"))
    wait_for(lambda: first.stats()["spool"] == 3, 10, "three spooled")
    first.close()  # the far end never took them: they stay on disk
    assert [json.loads(line)["key"] for line in (tmp_path / "spool.jsonl").read_text().splitlines()] == \
        ["a:0", "a:1", "a:2"]
    assert down.delivered == [] and first.stats()["failed_attempts"] > 0

    up = FarEnd()
    second = sender(tmp_path, up)  # the next run
    for i in range(3, 5):
        second.publish(alert(f"a:{i}"))
    wait_for(lambda: len(up.delivered) == 5, 10, "every message")
    second.close()
    assert up.delivered == [f"a:{i}" for i in range(5)]
    assert (tmp_path / "spool.jsonl").read_text() == ""


def test_retries_back_off_but_never_beyond_the_cap(tmp_path):
    """Uncapped, QUICK's delays (doubling from 10 ms) would allow about 7 attempts in 1.5 s; capped at 50 ms
    there are dozens. Doubling itself shows in the first gaps."""
    down = FarEnd(up=False)
    s = sender(tmp_path, down)
    s.publish(alert("x"))
    time.sleep(1.5)
    s.close()
    times = [t for t, _ in down.attempts]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) >= 12, len(times)  # the cap holds: 0.05 s between tries, far more than doubling allows
    assert gaps[1] >= 1.5 * QUICK.initial_s and gaps[2] > gaps[0]  # the delay grew before it reached the cap


def test_a_message_never_taken_is_dead_lettered_and_the_rest_go_on(tmp_path):
    link = FarEnd()
    link.refuse = {"bad"}
    s = sender(tmp_path, link, max_attempts=3)
    for key in ("ok:1", "bad", "ok:2"):
        s.publish(alert(key))
    wait_for(lambda: link.delivered == ["ok:1", "ok:2"], 10, "the good ones around the bad one")
    stats = s.stats()
    s.close()
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["msg"]["key"], d["attempts"], d["error"], d["test"]) for d in dead] == \
        [("bad", 3, "refused: 400", "test")]
    assert stats["dead_letters"] == 1 and stats["failed_attempts"] == 3 and stats["spool"] == 0
    assert [k for _, k in link.attempts].count("bad") == 3
    assert SpooledSender(FarEnd(), tmp_path / "other.jsonl", SenderPolicy(backoff=QUICK),
                         dead_path=tmp_path / "dead.jsonl").stats()["dead_letters"] == 1  # counted from disk


def test_without_max_attempts_a_head_waits_as_long_as_it_takes(tmp_path):
    link = FarEnd(up=False)
    s = sender(tmp_path, link)  # Redis and MQTT: an outage, not a refusal
    s.publish(alert("kept"))
    wait_for(lambda: len(link.attempts) >= 10, 10, "ten failed attempts")
    link.taking = True
    wait_for(lambda: link.delivered == ["kept"], 10, "the delivery once the far end is back")
    s.close()
    assert not (tmp_path / "dead.jsonl").exists()


def test_publish_never_waits_on_a_delivery_in_flight(tmp_path):
    """The far end holds the first delivery; publishes made meanwhile return while it is still pending (proven
    by order: the counters had not moved when the last publish returned)."""
    link = FarEnd()
    link.gate.clear()
    s = sender(tmp_path, link)
    s.publish(alert("held"))
    assert link.in_delivery.wait(10)
    for i in range(50):
        s.publish(alert(f"behind:{i}"))
        s.publish(overlay(i))
    stats = s.stats()
    assert stats["queued"] == 100 and stats["delivered"] == 0 and link.delivered == []
    link.gate.set()
    wait_for(lambda: len(link.delivered) == 51, 10, "everything after the release")
    s.close()
    assert link.delivered == ["held", *[f"behind:{i}" for i in range(50)]] and link.lossy == list(range(50))


def test_lossy_messages_are_bounded_and_flow_again_once_a_down_far_end_answers(tmp_path):
    link = FarEnd()
    link.gate.clear()
    s = sender(tmp_path, link, queue_max=10)
    s.publish(alert("held"))  # holds the worker, so lossy messages pile up
    assert link.in_delivery.wait(10)
    for i in range(25):
        s.publish(overlay(i))
    assert s.stats()["lossy_dropped"] == 15  # past queue_max: dropped, never stored
    link.gate.set()
    wait_for(lambda: link.lossy == list(range(10)), 10, "the ten admitted")

    link.taking = False
    s.publish(overlay(100))  # fails: the link is down now, and is probed until it answers
    wait_for(lambda: not link.up, 10, "the link down")
    link.taking = True
    wait_for(lambda: link.up, 10, "the probe to find the far end back")
    s.publish(overlay(101))
    wait_for(lambda: link.lossy[-1:] == [101], 10, "lossy messages again")
    s.close()


def test_a_message_published_after_close_is_refused_loudly_and_changes_nothing(tmp_path, caplog):
    """After close the spool (and its lock) belong to the next run: an alert is not written behind its back; the
    refusal names the alert (it is still in the alert log, the other edge), and the publisher is not disturbed."""
    link = FarEnd()
    s = sender(tmp_path, link)
    s.publish(alert("before"))
    wait_for(lambda: link.delivered == ["before"], 10, "the first delivery")
    s.close()
    s.publish(alert("late"))
    s.publish(overlay(1))
    assert (tmp_path / "spool.jsonl").read_text() == "" and link.delivered == ["before"] and link.lossy == []
    assert "CANNOT SPOOL late" in caplog.text
