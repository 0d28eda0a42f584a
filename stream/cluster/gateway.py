"""`serve --ray`: the gateway's side of the cluster. Cameras go to the director; what they produce comes back
from Redis.

The gateway keeps no camera state of its own: the director holds the cameras, Redis the messages. A restarted
gateway (or a second one) asks the director for the list and reads Redis again, so its page shows every camera.
It is the `remote` of a `LiveService` (stream.live.server.service.RemoteStreams); browser webcams never reach it
and stay on the gateway's local pipeline.

Two reader threads feed the websocket hub: one on the overlay and status channels (`redis_bus.channel_patterns`),
one on the alert stream (the Redis bus's `AlertStreamReader`), which starts with the last `ALERT_BACKLOG` entries
so open alerts reach a page again after a restart. Both read the pipeline's `redis_namespace`, the one the nodes
publish under. Messages this gateway published itself (its webcams) are skipped: the hub already had them.

A lost head does not stop the readers (Redis is not the head's). A director call that finds the director gone
looks it up again (the head came back: Ray restarted it); while none answers, a change through the API is
refused (`RemoteUnavailable`, 503) and the camera list is the last one known.

An alert's evidence stays on the node that wrote it; the node uploads it into Redis (redis_evidence.py), and
`fetch_evidence` brings it into this gateway's own evidence folder, where `/evidence` serves it as a local file.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from stream.cluster.director import find_director
from stream.cluster.pipeline import Pipeline
from stream.cluster.settings import DIRECTOR_NAME, HEAD_LOSS, NAMESPACE
from stream.config.evidence import EvidencePolicy
from stream.live.bus.redis_alerts import AlertStreamReader
from stream.live.bus.redis_bus import UNREACHABLE, channel_patterns, connect
from stream.live.bus.redis_evidence import RedisEvidence
from stream.live.server.service import RemoteUnavailable

log = logging.getLogger(__name__)

ALERT_BACKLOG = 500  # alert-stream entries replayed into the hub at start (open alerts survive a restart)
CALL_TIMEOUT_S = 30.0  # a director call slower than this fails the request (the cluster is unwell)
STATUS_CACHE_S = 0.5  # the director's camera list is asked for at most this often...
STATUS_TIMEOUT_S = 2.0  # ...and waited for this long (the page's request waits on it), else the last list is shown
REFIND_S = 10.0  # a director found gone is looked up again for this long before the request is refused
READ_BLOCK_MS = 1000
RETRY_S = 1.0  # after a Redis error, readers try again this much later


class RemoteCamera:
    """What `LiveService.add_config` hands back for a camera placed on the cluster."""

    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url


class ClusterCameras:
    def __init__(self, address: str, pipeline: Pipeline) -> None:
        self.address = address
        self.pipeline = pipeline
        self.namespace = pipeline.serve["redis_namespace"]
        self.director: Any = None
        self._deliver: Callable[[dict], None] | None = None
        self._own: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cache: tuple[float, dict[str, dict]] = (0.0, {})
        self._known: dict[str, dict] = {}  # the last camera list the director gave
        self.evidence = RedisEvidence(pipeline.serve["redis"], self.namespace,
                                      EvidencePolicy.model_validate(pipeline.serve["evidence"]).shared)

    # -- LiveService's side ---------------------------------------------------------------------------------

    def start(self, deliver: Callable[[dict], None], own_source: str | None) -> None:
        """Join the cluster (as a Ray driver on this machine's node), hand the director the pipeline, and start
        reading Redis into `deliver`."""
        self._join()
        self.director = find_director()
        self._ask("configure", self.pipeline.model_dump(mode="json"))
        self._deliver, self._own = deliver, own_source
        for target, name in ((self._read_channels, "cluster-channels"), (self._read_alerts, "cluster-alerts")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("serve --ray: joined the cluster at %s", self.address)

    def add(self, config: Any) -> RemoteCamera:
        self._ask("add", config.model_dump(mode="json"))
        self._cache = (0.0, {})
        return RemoteCamera(config.name, config.url)

    def remove(self, name: str) -> bool:
        removed = self._ask("remove", name)
        self._cache = (0.0, {})
        return bool(removed)

    def statuses(self) -> dict[str, dict]:
        """name -> {"state", "node", "last_overlay_age_s", ...} for every camera of the cluster; the last list
        known while the director does not answer (a head lost)."""
        at, cameras = self._cache
        if time.monotonic() - at > STATUS_CACHE_S:
            try:
                cameras = self._ask("status", timeout=STATUS_TIMEOUT_S, refind=False)["cameras"]
                self._known = cameras
            except RemoteUnavailable as exc:
                log.warning("serve --ray: %s; showing the last camera list", exc)
                cameras = self._known
            self._cache = (time.monotonic(), cameras)
        return cameras

    def _join(self) -> None:
        """Attach to the cluster as a Ray driver (to a node of this machine; Ray prefers the head's)."""
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for name, value in HEAD_LOSS.env().items():  # this driver waits for a lost head as long as the nodes do
            os.environ.setdefault(name, value)
        ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        if threading.current_thread() is threading.main_thread():  # serve's own shutdown keeps SIGTERM
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)

    def _rejoin_if_orphaned(self) -> None:
        """A driver whose own node died (the head's, when the gateway runs on the head's machine and the head
        came back) reaches no restarted actor: it attaches again, to a node alive now."""
        me = ray.get_runtime_context().get_node_id()
        if any(n["NodeID"] == me and n.get("Alive") for n in ray.nodes()):
            return
        log.warning("serve --ray: this gateway's Ray node is gone; attaching to the cluster again")
        ray.shutdown()
        self._join()

    def fetch_evidence(self, alert_id: str, name: str, folder: Any) -> None:
        """Bring an alert's file from Redis into `folder` (LookupError with the reason when it cannot)."""
        self.evidence.fetch(alert_id, name, folder)

    def _ask(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S, refind: bool = True) -> Any:
        """One call to the director. One found gone (a head lost) is looked up again and, with `refind`, asked
        once more; RemoteUnavailable when none answers (the next call looks again)."""
        for attempt in (1, 2):
            director = self._director()
            try:
                return ray.get(getattr(director, method).remote(*args), timeout=timeout)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                self.director = None
                try:
                    self._rejoin_if_orphaned()
                    if attempt == 1 and refind:
                        self.director = find_director(REFIND_S)
                        continue
                except Exception as err:  # noqa: BLE001 - no director reachable now: said below, retried next call
                    log.warning("serve --ray: the director is not reachable: %s: %s", type(err).__name__, err)
                raise RemoteUnavailable(f"the cluster's director does not answer ({type(exc).__name__}); "
                                        "is the head down?") from None
        raise AssertionError("unreachable")

    def _director(self) -> Any:
        if self.director is None:
            try:
                self.director = ray.get_actor(DIRECTOR_NAME, namespace=NAMESPACE)
            except ValueError:
                raise RemoteUnavailable("the cluster has no director now (is the head down?)") from None
        return self.director

    def names(self) -> set[str]:
        return set(self.statuses())

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(READ_BLOCK_MS / 1000 + 3)
        if ray.is_initialized():
            ray.shutdown()

    # -- the readers ----------------------------------------------------------------------------------------

    def _hand(self, msg: dict) -> None:
        if self._own is not None and msg.get("source") == self._own:
            return
        assert self._deliver is not None
        self._deliver(msg)

    def _read_channels(self) -> None:
        url = self.pipeline.serve["redis"]
        while not self._stop.is_set():
            try:
                pubsub = connect(url, client_name="dfstream-gateway").pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(*channel_patterns(self.namespace))
                while not self._stop.is_set():
                    item = pubsub.get_message(timeout=0.2)
                    if item and item.get("type") == "pmessage":
                        self._hand(json.loads(item["data"]))
                pubsub.close()
            except UNREACHABLE as exc:
                log.warning("serve --ray: Redis channels unreachable (%s); retrying", exc)
                self._stop.wait(RETRY_S)

    def _read_alerts(self) -> None:
        url = self.pipeline.serve["redis"]
        reader: AlertStreamReader | None = None
        while not self._stop.is_set():
            try:
                client = connect(url, client_name="dfstream-gateway-alerts", socket_timeout=READ_BLOCK_MS / 1000 + 2)
                if reader is None:
                    reader = AlertStreamReader(client, self.namespace)
                    entries = reader.backlog(ALERT_BACKLOG)
                else:  # reconnected: on from the last entry handed over
                    reader = AlertStreamReader(client, self.namespace, after=reader.last)
                    entries = []
                while not self._stop.is_set():
                    for _, msg in entries:
                        if msg is not None:
                            self._hand(msg)
                    entries = reader.read(block_ms=READ_BLOCK_MS)
            except UNREACHABLE as exc:
                log.warning("serve --ray: Redis alert stream unreachable (%s); retrying", exc)
                self._stop.wait(RETRY_S)
