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

A lost head does not stop the readers (Redis is not the head's). The director is reached through a
`DirectorLink` (director_link.py), which never blocks the page on a head that is not there: while the director
does not answer, a change through the API is refused (`RemoteUnavailable`, 503) and the camera list is the last
one known; once the head is back, the link finds the restarted director.

An alert's evidence stays on the node that wrote it; the node uploads it into Redis (redis_evidence.py), and
`fetch_evidence` brings it into this gateway's own evidence folder, where `/evidence` serves it as a local file.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from stream.cluster.director_link import DirectorLink
from stream.cluster.pipeline import Pipeline
from stream.config.evidence import EvidencePolicy
from stream.live.bus.redis_alerts import AlertStreamReader
from stream.live.bus.redis_bus import UNREACHABLE, channel_patterns, connect
from stream.live.bus.redis_evidence import RedisEvidence

log = logging.getLogger(__name__)

ALERT_BACKLOG = 500  # alert-stream entries replayed into the hub at start (open alerts survive a restart)
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
        self.director = DirectorLink(address)
        self._deliver: Callable[[dict], None] | None = None
        self._own: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.evidence = RedisEvidence(pipeline.serve["redis"], self.namespace,
                                      EvidencePolicy.model_validate(pipeline.serve["evidence"]).shared)

    # -- LiveService's side ---------------------------------------------------------------------------------

    def start(self, deliver: Callable[[dict], None], own_source: str | None) -> None:
        """Join the cluster (as a Ray driver on this machine's node), hand the director the pipeline, and start
        reading Redis into `deliver`."""
        self.director.open()
        self.director.ask("configure", self.pipeline.model_dump(mode="json"))
        self._deliver, self._own = deliver, own_source
        for target, name in ((self._read_channels, "cluster-channels"), (self._read_alerts, "cluster-alerts")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("serve --ray: joined the cluster at %s", self.address)

    def add(self, config: Any) -> RemoteCamera:
        self.director.ask("add", config.model_dump(mode="json"))
        return RemoteCamera(config.name, config.url)

    def remove(self, name: str) -> bool:
        return bool(self.director.ask("remove", name))

    def statuses(self) -> dict[str, dict]:
        """name -> {"state", "node", "last_overlay_age_s", ...} for every camera of the cluster, as the director
        last said (the last list known while it does not answer)."""
        return self.director.cameras()

    def fetch_evidence(self, alert_id: str, name: str, folder: Any) -> None:
        """Bring an alert's file from Redis into `folder` (LookupError with the reason when it cannot)."""
        self.evidence.fetch(alert_id, name, folder)

    def names(self) -> set[str]:
        return set(self.statuses())

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(READ_BLOCK_MS / 1000 + 3)
        self.director.close()
        self.evidence.close()

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
