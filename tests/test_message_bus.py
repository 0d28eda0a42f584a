"""The in-process bus: subscribers say what they want (`subscribe(kind, fn) -> unsubscribe`), get records or their
wire form (made once per record), in order, from any thread; answers published by a subscriber come after the
record that caused them; one failing subscriber costs the others nothing."""

from __future__ import annotations

import threading

import pytest

from stream.live.bus import MessageBus
from stream.messages import WIRE, Alert, AlertClosing, Custody, Overlay, Status


def overlay(stream: str = "cam", t: float = 0.0) -> Overlay:
    return Overlay(stream=stream, pts=0, time=t, frame_size=(64, 64), latency_ms=5.0, faces=(), verdict="none")


def alert(event: str = "start", seq: int = 1) -> Alert:
    return Alert(event=event, id="a" * 32, seq=seq, stream="cam", track=1, started_at=1.0, ended_at=None,
                 score_max=0.9, engines={"m": 0.9}, evidence={}, at=3.5, faces=("crop", "crops"))


def test_each_subscriber_gets_only_the_kinds_it_asked_for_in_order():
    bus = MessageBus()
    overlays, alerts, wire = [], [], []
    bus.subscribe(Overlay, overlays.append)
    bus.subscribe(Alert, alerts.append)
    bus.subscribe(WIRE, wire.append)
    sent = [overlay(t=1.0), alert(), Status("cam", state="stopped"), Custody("a" * 32, "none"), overlay(t=2.0)]
    for record in sent:
        bus.publish(record)
    assert overlays == [sent[0], sent[4]]
    assert alerts == [sent[1]]
    assert wire == [sent[0], sent[1], sent[2], sent[4]]  # Custody is in-process only: not on the wire
    assert bus.subscribers(Overlay) == 2 and bus.subscribers(Custody) == 0


def test_unsubscribe_stops_delivery_and_is_idempotent():
    bus = MessageBus()
    got, kept = [], []
    unsubscribe = bus.subscribe(Overlay, got.append)
    bus.subscribe(Overlay, kept.append)
    bus.publish(overlay(t=1.0))
    unsubscribe()
    unsubscribe()  # twice: harmless, and the other subscription stays
    bus.publish(overlay(t=2.0))
    assert [o.time for o in got] == [1.0] and [o.time for o in kept] == [1.0, 2.0]
    assert bus.subscribers(Overlay) == 1


def test_wire_form_is_made_once_and_shared_and_in_process_fields_never_reach_it():
    bus = MessageBus()
    first, second = [], []
    bus.subscribe(Alert, first.append, wire=True)
    bus.subscribe(WIRE, second.append, wire=True)
    record = alert()
    bus.publish(record)
    assert first[0] is second[0]  # one dict for every wire subscriber
    assert first[0] == record.to_message() and first[0]["key"] == f"{'a' * 32}:1"
    assert "at" not in first[0] and "faces" not in first[0]  # the recorder's, never on the wire
    assert Alert.from_message(first[0]) == record  # the wire form reads back into the record


def test_an_answer_published_by_a_subscriber_comes_after_the_record_that_caused_it():
    """The recorder answers a start on the bus; every subscriber still sees start before the answer."""
    bus = MessageBus()
    seen: list[tuple[str, str]] = []
    bus.subscribe(Alert, lambda a: bus.publish(AlertClosing(a.id, a.stream, a.at)))  # answers at once
    bus.subscribe((Alert, AlertClosing), lambda r: seen.append(("late", type(r).__name__)))
    bus.subscribe(AlertClosing, lambda r: seen.append(("closing", type(r).__name__)))
    bus.publish(alert())
    assert seen == [("late", "Alert"), ("late", "AlertClosing"), ("closing", "AlertClosing")]


def test_a_failing_subscriber_costs_the_others_nothing():
    bus = MessageBus()
    got = []

    def broken(record):
        raise RuntimeError("a subscriber's bug")

    bus.subscribe(Overlay, broken)
    bus.subscribe(Overlay, got.append)
    bus.publish(overlay())
    bus.publish(overlay())
    assert len(got) == 2 and bus.failures == 2


def test_publishers_on_many_threads_each_keep_their_order():
    bus = MessageBus()
    seen: dict[str, list[float]] = {}
    lock = threading.Lock()

    def record(o: Overlay) -> None:
        with lock:
            seen.setdefault(o.stream, []).append(o.time)

    bus.subscribe(Overlay, record)
    threads = [threading.Thread(target=lambda s=s: [bus.publish(overlay(s, float(i))) for i in range(500)])
               for s in ("a", "b", "c", "d")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {s: [float(i) for i in range(500)] for s in ("a", "b", "c", "d")}


@pytest.mark.parametrize("kind", ["overlay", (), (Overlay, "alert"), None], ids=["string", "empty", "mixed", "none"])
def test_a_kind_that_is_not_a_record_class_is_refused_and_nothing_is_subscribed(kind):
    bus = MessageBus()
    with pytest.raises(TypeError, match="record class"):
        bus.subscribe(kind, print)
    assert bus.subscribers(Overlay) == 0 and bus.subscribers(Alert) == 0
