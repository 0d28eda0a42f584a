"""LiveService and its bus, with the serve fakes (no MTCNN, no decoding): the parts are subscribed in one place and
unsubscribed at stop, and a stream removed without announcing it (a cluster node moving a camera away) still goes
through `remove`: the recorder detaches and the removal listeners run, but no `removed` status is published."""

from __future__ import annotations

import asyncio

from support.serve_fakes import AlwaysFake, OneFace, Ticker
from stream.config.serve import ServeConfig
from stream.live.server.service import LiveService
from stream.messages import Alert, AlertClosing, Custody, Overlay, Status


def test_remove_without_announcing_detaches_the_recorder_and_says_nothing(tmp_path):
    service = LiveService(ServeConfig(data_dir=tmp_path, persist_streams=False), [AlwaysFake()], OneFace())
    statuses: list[Status] = []
    service.bus.subscribe(Status, statuses.append)
    removed: list[str] = []
    service.on_removed(lambda source: removed.append(source.name))
    try:
        for name in ("moving", "leaving"):
            service.add_source(Ticker(name))
        assert service.recorder.ring("moving") is not None and service.recorder.ring("leaving") is not None
        assert service.remove("moving", announce=False)
        assert service.recorder.ring("moving") is None and removed == ["moving"]
        assert "moving" not in service.names()
        assert not [s for s in statuses if s.stream == "moving" and s.removed]
        assert service.remove("leaving")  # through the API: announced
        assert [s.state for s in statuses if s.stream == "leaving" and s.removed] == ["stopped"]
        assert not service.remove("moving", announce=False)  # gone already: nothing to do, nothing said
        assert removed == ["moving", "leaving"]
    finally:
        asyncio.run(service.stop())


def test_the_service_wires_its_parts_once_and_unwires_them_at_stop(tmp_path):
    service = LiveService(ServeConfig(data_dir=tmp_path, persist_streams=False), [AlwaysFake()], OneFace())
    # overlays: recorder and hub; alerts: recorder, alert log, hub; the evidence's answers: recorder and lifecycle
    wired = {Overlay: 2, Status: 1, Alert: 3, AlertClosing: 1, Custody: 1}
    assert {kind: service.bus.subscribers(kind) for kind in wired} == wired
    asyncio.run(service.stop())
    assert {kind: service.bus.subscribers(kind) for kind in wired} == dict.fromkeys(wired, 0)
