"""Who hears what on `serve`'s bus: every subscriber of a `LiveService`, in one place, in the order each record
reaches them (the bus calls subscribers in the order they subscribed).

    scheduler ──Overlay, Status──┐
    sources' state changes ──────┤                  ┌─► recorder: overlay rings, recordings' overlay tracks
    alert lifecycle ──Alert──────┼──► MessageBus ───┼─► recorder: face crops, recordings; answers Custody ──┐
                 ──AlertClosing──┤                  ├─► lifecycle: Custody → the alert's update / end ◄─────┘
    recorder ──Custody───────────┘                  ├─► alert log (alerts.jsonl)          ┐
                                                    ├─► websocket hub (the page)         │ wire form, made
                                                    ├─► Redis (with --redis)             │ once per record
                                                    └─► webhooks, MQTT                   ┘

Metrics (server/metrics.py) and the cluster's node worker subscribe on their own, to `service.bus`, when they are
built: they are optional parts, not the service's. Off the bus, a camera learning its baseline listens to the
judge's judged faces (`wire_baselines`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stream.live.bus import AlertLog, MessageBus, Unsubscribe
from stream.live.bus.channels import Channels
from stream.live.evidence.recorder import Recorder
from stream.live.server.hub import Hub
from stream.live.verdicts.alerts import AlertManager
from stream.live.verdicts.cameras import CameraBars
from stream.live.verdicts.judge import Judge
from stream.messages import WIRE, Alert, AlertClosing, Custody, Overlay

if TYPE_CHECKING:
    from stream.live.voices.live import VoiceLoop


def wire(bus: MessageBus, *, alerts: AlertManager, recorder: Recorder, alert_log: AlertLog, hub: Hub,
         redis: Any | None, channels: Channels) -> list[Unsubscribe]:
    """Subscribe the service's parts to `bus`; returns their unsubscribers (called when the service stops)."""
    return [*wire_evidence(bus, alerts, recorder), *wire_edges(bus, alert_log, hub, redis, channels)]


def wire_evidence(bus: MessageBus, alerts: AlertManager, recorder: Recorder) -> list[Unsubscribe]:
    """Evidence: overlays feed the recording rings; an alert's start writes its face and starts its recording, its
    closing records the post-roll; the recorder answers with the custody, which the lifecycle sends."""
    return [bus.subscribe(Overlay, recorder.on_overlay),
            bus.subscribe(Alert, recorder.on_alert),
            bus.subscribe(AlertClosing, recorder.on_closing),
            bus.subscribe(Custody, alerts.amend)]


def wire_edges(bus: MessageBus, alert_log: AlertLog, hub: Hub, redis: Any | None,
               channels: Channels) -> list[Unsubscribe]:
    """The edges, in wire form: the alert log, the page, Redis, the alert channels."""
    subscriptions = [bus.subscribe(Alert, alert_log.append, wire=True),
                     bus.subscribe(WIRE, hub.publish_threadsafe, wire=True)]
    if redis is not None:
        subscriptions.append(bus.subscribe(redis.kinds, redis.publish, wire=True))
    return subscriptions + [bus.subscribe(channel.kinds, channel.publish, wire=True) for channel in channels.all]


def wire_baselines(judge: Judge, bars: CameraBars, voices: VoiceLoop | None = None) -> list[Unsubscribe]:
    """Live learning of camera baselines: every judged face reaches the bars, which keep those of a learning
    stream (stream/live/verdicts/cameras.py); every scored voice window reaches the voice bars likewise."""
    out = [judge.on_judged(bars.on_judged)]
    if voices is not None and bars.voice is not None:
        out.append(voices.judge.on_judged(bars.voice.on_judged))
    return out
