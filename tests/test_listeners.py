"""`stream.live.listeners.Listeners`: the subscribe API side effects use instead of attribute hooks."""

from __future__ import annotations

import logging

from stream.live.listeners import Listeners


def test_subscribers_are_called_in_order_until_they_unsubscribe():
    seen: list[tuple[str, int]] = []
    events: Listeners[int] = Listeners("test event")
    stop_a = events.subscribe(lambda e: seen.append(("a", e)))
    events.subscribe(lambda e: seen.append(("b", e)))
    events.notify(1)
    stop_a()
    stop_a()  # idempotent
    events.notify(2)
    assert seen == [("a", 1), ("b", 1), ("b", 2)] and len(events) == 1


def test_a_failing_subscriber_is_logged_and_the_others_still_run(caplog):
    seen: list[int] = []
    events: Listeners[int] = Listeners("test event")

    def broken(e: int) -> None:
        raise RuntimeError("broken side effect")

    events.subscribe(broken)
    events.subscribe(seen.append)
    with caplog.at_level(logging.ERROR, logger="stream.live.listeners"):
        events.notify(7)
    assert seen == [7]
    assert "a test event subscriber failed" in caplog.text and "broken side effect" in caplog.text


def test_the_same_function_twice_is_two_subscriptions():
    seen: list[int] = []
    events: Listeners[int] = Listeners("test event")
    first = events.subscribe(seen.append)
    events.subscribe(seen.append)
    events.notify(1)
    assert seen == [1, 1]
    first()  # ends that subscription only
    events.notify(2)
    assert seen == [1, 1, 2]
