"""`GET /metrics`: Prometheus text format, from one `CollectorRegistry` per app (never the global one, so two
servers in one process, as in the tests, never share series).

Most series are read from the counters the pipeline already keeps, at scrape time (`ServiceCollector`): the
sources' buffers (received, dropped, taken by the scheduler = analysed), reconnects and state, the bus's
`stats()` (Redis spool depth), the alert channels' queues and dead letters, the hub's clients and their dropped messages, the WebRTC peers. Only what needs
observations is recorded as it happens: the frame-to-verdict latency of every overlay and the alerts started and
ended (subscribers of the service's bus), and each engine's batch time and size (a subscriber of the scorer's
`on_batch`, one `EngineBatch` per `predict`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from stream.live.scoring import EngineBatch
from stream.live.sources import SourceState
from stream.messages import Alert, Overlay

PREFIX = "dfstream"
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
BATCH_TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceCollector(Collector):
    """Reads the service's own counters when scraped. `peers()` gives extra gauges (WebRTC peers by kind)."""

    def __init__(self, service: Any, peers: Callable[[], dict[str, int]] = dict) -> None:
        self.service = service
        self.peers = peers

    def collect(self) -> Iterator[Any]:
        s = self.service
        received = CounterMetricFamily(f"{PREFIX}_stream_frames_received", "frames decoded and handed to the "
                                       "stream's buffer", labels=["stream"])
        dropped = CounterMetricFamily(f"{PREFIX}_stream_frames_dropped", "frames dropped at the buffer (newer "
                                      "ones superseded them before analysis)", labels=["stream"])
        analysed = CounterMetricFamily(f"{PREFIX}_stream_frames_analysed", "frames taken by the scheduler for "
                                       "detection and scoring", labels=["stream"])
        reconnects = CounterMetricFamily(f"{PREFIX}_stream_reconnects", "reconnect attempts", labels=["stream"])
        state = GaugeMetricFamily(f"{PREFIX}_stream_state", "1 for the stream's current state",
                                  labels=["stream", "state"])
        fps = GaugeMetricFamily(f"{PREFIX}_stream_analysed_fps", "analysed frames per second, recently",
                                labels=["stream"])
        streams = s.scheduler.streams()
        for st in streams:
            src, name = st.source, st.source.name
            received.add_metric([name], src.buffer.received)
            dropped.add_metric([name], src.buffer.dropped)
            analysed.add_metric([name], src.buffer.taken)
            reconnects.add_metric([name], src.reconnects)
            for value in SourceState:
                state.add_metric([name, value.value], 1.0 if src.state is value else 0.0)
            fps.add_metric([name], st.analysed.rate())
        yield from (received, dropped, analysed, reconnects, state, fps)
        yield GaugeMetricFamily(f"{PREFIX}_streams", "streams running", value=len(streams))
        yield GaugeMetricFamily(f"{PREFIX}_max_streams", "the stream limit", value=s.config.max_streams)

        hub = s.hub
        yield GaugeMetricFamily(f"{PREFIX}_websocket_clients", "websocket clients connected", value=len(hub.clients))
        yield CounterMetricFamily(f"{PREFIX}_websocket_dropped_messages", "overlay and status messages dropped "
                                  "for slow websocket clients", value=hub.dropped_total())
        yield CounterMetricFamily(f"{PREFIX}_websocket_refused_messages", "client messages refused by the "
                                  "per-client rate limit", value=hub.refused_total())

        stats = s.redis.stats() if s.redis is not None else {}
        if "spool" in stats:  # a Redis bus
            yield GaugeMetricFamily(f"{PREFIX}_redis_spool_depth", "alerts spooled on disk while Redis is "
                                    "unreachable", value=stats["spool"])
            yield GaugeMetricFamily(f"{PREFIX}_redis_up", "1 while Redis is reachable", value=float(stats["redis_up"]))
            yield GaugeMetricFamily(f"{PREFIX}_redis_queue_depth", "messages waiting for the publisher thread",
                                    value=stats.get("queued", 0))
        else:
            yield GaugeMetricFamily(f"{PREFIX}_redis_spool_depth", "alerts spooled on disk while Redis is "
                                    "unreachable (no Redis configured: always 0)", value=0)

        yield from channel_metrics(s.channels.stats() if getattr(s, "channels", None) is not None else {})

        peers = GaugeMetricFamily(f"{PREFIX}_webrtc_peers", "open WebRTC peers", labels=["kind"])
        for kind, n in self.peers().items():
            peers.add_metric([kind], n)
        yield peers
        yield GaugeMetricFamily(f"{PREFIX}_engines", "engines loaded", value=len(s.scheduler.engines))


def channel_metrics(stats: dict[str, Any]) -> Iterator[Any]:
    """The alert channels' queues (stream.live.bus.channels): per webhook, and the MQTT broker's link."""
    queued = GaugeMetricFamily(f"{PREFIX}_webhook_queue_depth", "alerts waiting on disk for the webhook",
                               labels=["webhook"])
    delivered = CounterMetricFamily(f"{PREFIX}_webhook_delivered", "alerts the webhook's receiver took (2xx)",
                                    labels=["webhook"])
    failed = CounterMetricFamily(f"{PREFIX}_webhook_failed_attempts", "failed POSTs (each retried or "
                                 "dead-lettered)", labels=["webhook"])
    dead = GaugeMetricFamily(f"{PREFIX}_webhook_dead_letters", "alerts in the webhook's dead-letter file",
                             labels=["webhook"])
    for name, hook in stats.get("webhooks", {}).items():
        queued.add_metric([name], hook["queued"])
        delivered.add_metric([name], hook["delivered"])
        failed.add_metric([name], hook["failed_attempts"])
        dead.add_metric([name], hook["dead_letters"])
    yield from (queued, delivered, failed, dead)
    mqtt = stats.get("mqtt")
    if mqtt is not None:
        yield GaugeMetricFamily(f"{PREFIX}_mqtt_connected", "1 while the MQTT broker is connected",
                                value=float(mqtt["connected"]))
        yield GaugeMetricFamily(f"{PREFIX}_mqtt_spool_depth", "alerts spooled on disk for the MQTT broker",
                                value=mqtt["spool"])
        yield CounterMetricFamily(f"{PREFIX}_mqtt_events_sent", "alert messages the broker acknowledged",
                                  value=mqtt["events_sent"])


class Metrics:
    """The registry of one app, and the hooks that feed its histograms and counters."""

    def __init__(self, service: Any, peers: Callable[[], dict[str, int]] = dict) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ServiceCollector(service, peers))
        self.latency = Histogram(f"{PREFIX}_frame_to_verdict_seconds", "from a frame's decoding to its overlay's "
                                 "publication", ["stream"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_time = Histogram(f"{PREFIX}_engine_batch_seconds", "time of one engine predict() over a batch",
                                    ["engine"], buckets=BATCH_TIME_BUCKETS, registry=self.registry)
        self.batch_size = Histogram(f"{PREFIX}_engine_batch_size", "windows in one engine predict()", ["engine"],
                                    buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.alerts = Counter(f"{PREFIX}_alerts", "alert events", ["event"], registry=self.registry)
        for event in ("start", "end"):
            self.alerts.labels(event)  # present (at 0) before the first alert
        self.unsubscribe = [service.bus.subscribe(Overlay, self.observe_overlay),
                            service.bus.subscribe(Alert, self.observe_alert),
                            service.scheduler.scorer.on_batch(self.observe_batch)]

    def observe_overlay(self, overlay: Overlay) -> None:
        self.latency.labels(overlay.stream).observe(overlay.latency_ms / 1000.0)

    def observe_alert(self, alert: Alert) -> None:
        if alert.event in ("start", "end"):
            self.alerts.labels(alert.event).inc()

    def observe_batch(self, batch: EngineBatch) -> None:
        self.batch_time.labels(batch.engine).observe(batch.seconds)
        self.batch_size.labels(batch.engine).observe(batch.size)

    def forget_stream(self, name: str) -> None:
        """Drop a removed stream's latency series (so removed streams do not pile up)."""
        try:
            self.latency.remove(name)
        except KeyError:
            pass

    def scrape(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "ServiceCollector"]
