"""The sources' explicit state machine: one table of allowed changes, listeners told of each change, and status
pushed by `serve` on every change rather than only at the scheduler's next heartbeat."""

from __future__ import annotations

import threading
import time

import pytest

from stream.config.sources import SourceConfig
from stream.live.scheduler.loop import Scheduler
from stream.live.sources import SourceState
from stream.live.sources.base import TRANSITIONS, InvalidTransition, StateMachine
from stream.live.sources.live import AVLiveSource

from support.shared import FFPP

S = SourceState


class _Machine(StateMachine):
    """The state machine alone, as a source subclass drives it: `set_state` is what a source's threads call."""

    name = "m"

    def __init__(self) -> None:
        self._init_state()

    def set_state(self, *args, **kwargs) -> bool:
        return self._set_state(*args, **kwargs)


def test_allowed_changes_notify_listeners_and_forbidden_ones_raise():
    m = _Machine()
    seen = []
    unsubscribe = m.on_state(lambda src, old, new: seen.append((old, new)))
    assert m.set_state(S.CONNECTING) and m.set_state(S.STREAMING, error=None)
    assert not m.set_state(S.STREAMING)  # same state: a no-op, not a notification
    assert seen == [(S.IDLE, S.CONNECTING), (S.CONNECTING, S.STREAMING)]
    m.set_state(S.ENDED)
    with pytest.raises(InvalidTransition, match="ended -> streaming"):
        m.set_state(S.STREAMING)
    assert m.state is S.ENDED and seen[-1] == (S.STREAMING, S.ENDED)
    unsubscribe()
    m.set_state(S.STOPPED)
    assert seen[-1] == (S.STREAMING, S.ENDED)  # unsubscribed: not told


def test_stop_wins_over_a_late_change_from_the_decoder_thread():
    m = _Machine()
    m.set_state(S.CONNECTING)
    m.set_state(S.STOPPED)
    assert not m.set_state(S.STREAMING) and m.state is S.STOPPED  # dropped, not raised
    assert m.set_state(S.CONNECTING)  # a restart is allowed


def test_every_state_can_be_stopped_and_restarted():
    for state, allowed in TRANSITIONS.items():
        if state is not S.STOPPED:
            assert S.STOPPED in allowed, state
    assert all(S.CONNECTING in TRANSITIONS[s] for s in (S.IDLE, S.ENDED, S.FAILED, S.STOPPED))


def test_serve_pushes_status_on_each_change_of_a_file_source():
    """A short file that is not looped goes connecting -> streaming -> ended; each change is published at once
    (the scheduler is never started here, so no heartbeat could have sent them)."""
    published, done = [], threading.Event()

    def publish(record):
        msg = record.to_message()
        published.append(msg)
        if msg.get("state") == "ended":
            done.set()

    sched = Scheduler(detector=None, engines=[], publish=publish)  # type: ignore[arg-type]
    source = AVLiveSource(SourceConfig(name="clip", url=str(FFPP / "real" / "004.mp4"), pace=False))
    sched.add(source)
    source.on_state(lambda src, old, new: sched.publish_source_status(src))
    source.start()
    try:
        while not done.is_set() and source.state is not S.FAILED:
            source.buffer.take_latest()  # the unpaced file waits for its consumer
            time.sleep(0.001)
    finally:
        source.stop()
    states = [m["state"] for m in published]
    assert states[:3] == ["connecting", "streaming", "ended"], states
    assert all(m["stream"] == "clip" and "analysed_fps" in m for m in published)
