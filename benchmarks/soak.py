"""Soak test of `serve`: the real command (`python -m stream serve`, its own process) for a long time with every
channel attached, watching for what grows and for alerts lost or repeated across outages.

It starts, on loopback: a persistent `redis-server` (AOF, fsync always, so its alert stream survives a crash), a
persistent Mosquitto with a subscriber on a persistent session (so it misses nothing while the broker is down), a
webhook receiver (tests/support/webhook_receiver.py, honouring the idempotency key), and GStreamer's RTSP server looping
a shared clip. `serve` runs 4 looped shared FF++ files and that RTSP camera through MTCNN and meso4-df, with
Redis, the webhook and MQTT. A websocket client reads the page's messages, and a camera is added and removed
through the API every minute. Redis is SIGKILLed at 35 % of the run and the broker at 55 %; each comes back
after `--outage-s`.

Every 10 s it samples serve's RSS, threads and open files (psutil), the open alerts (starts - ends in /metrics),
the spools (Redis, webhook, MQTT, from /readyz) and the recording rings' bytes (/api/streams). At the end it
stops serve (SIGTERM: the channels flush), prints each series' least-squares slope over the run's second half,
and checks every alert message in serve's own log (alerts.jsonl) against what the webhook receiver, the MQTT
subscriber and the Redis stream got: lost (never arrived, and not left in a spool for the next run) or repeated.
Targets: RSS <= 2 MiB/min over the second half, threads and open files flat, no alert lost or repeated.

    .venv/bin/python benchmarks/soak.py                    # 30 minutes
    .venv/bin/python benchmarks/soak.py --minutes 8        # a short run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's packages, not this folder's engines.py benchmark
sys.path.insert(0, str(ROOT / "tests"))  # the real-server harnesses the tests use

import psutil  # noqa: E402

from support.mqtt_broker import MqttBroker, Subscriber  # noqa: E402
from support.redis_server import RedisServer, free_port  # noqa: E402
from support.rtsp_server import RtspServer  # noqa: E402
from support.webhook_receiver import Receiver  # noqa: E402

SHARED = ROOT.parent / "shared"
FILES = sorted((SHARED / "data" / "ffpp-c23" / "fake").glob("*.mp4"))
RTSP_CLIP = SHARED / "data" / "ffpp-c23" / "fake" / "Deepfakes_519_515.mp4"
SAMPLE_S = 10.0
CHURN_S = 60.0
CHURN_CAMERA = "rtsp://127.0.0.1:9/soak"  # nothing listens: reconnects quietly
REDIS_KILL_AT, BROKER_KILL_AT = 0.35, 0.55  # fractions of the run
RSS_TARGET_MIB_PER_MIN = 2.0
FLAT_PER_MIN = 0.5  # a count (threads, open files) whose slope stays within this is flat (a leak of one per alert
# grows tens a minute here; the samples of a steady count wobble by a few)
SECRET_ENV, SECRET = "DFSTREAM_SOAK_HOOK_SECRET", "soak-secret"
TOKEN = "soak-token-0123456789abcdef"
# So that alerts flow (a soak with no alert checks nothing of the channels): every update counts (k=1, no
# smoothing) and a face alerts at p(fake) >= 0.9 and ends at <= 0.85, so a fake clip's faces start and end
# alerts every few seconds. Like the tests' TWITCHY policy; `--verdict default` runs the shipped one instead.
TWITCHY = {"smoothing": "ema", "ema_alpha": 1.0, "t_high": 0.9, "t_low": 0.85, "k": 1}
SERIES = ("rss_mib", "threads", "open_files", "open_alerts", "spooled", "ring_mib")
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 90.0
DRAIN_S = 10.0  # after serve stops, for the subscriber to get the last events


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) pairs, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mt, mv = sum(t for t, _ in points) / n, sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if den == 0 else 60.0 * sum((t - mt) * (v - mv) for t, v in points) / den


def get(url: str, timeout: float = 10.0) -> str:
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as err:  # /readyz says 503 with a body while a part is down
        return err.read().decode()


def alert_counts(metrics: str) -> Counter:
    from prometheus_client.parser import text_string_to_metric_families

    out: Counter = Counter()
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == "dfstream_alerts_total":
                out[s.labels.get("event", "")] += s.value
    return out


def sample(proc: psutil.Process, base: str) -> dict:
    ready = json.loads(get(base + "/readyz"))
    channels = ready.get("channels", {})
    bus = ready["checks"]["bus"]
    hooks = channels.get("webhooks", {})
    mqtt = channels.get("mqtt", {})
    counts = alert_counts(get(base + "/metrics"))
    streams = json.loads(get(base + "/api/streams"))
    rings = [s.get("ring") or {} for s in streams.values()]
    return {"rss_mib": round(proc.memory_info().rss / 2**20, 1), "threads": proc.num_threads(),
            "open_files": proc.num_fds(), "open_alerts": int(counts["start"] - counts["end"]),
            "spooled": int(bus.get("spooled", 0) + sum(h["queued"] for h in hooks.values()) + mqtt.get("spool", 0)),
            "ring_mib": round(sum(r.get("bytes", 0) for r in rings) / 2**20, 2),
            "redis_up": bus.get("connected"), "mqtt_up": mqtt.get("connected"),
            "streaming": sum(s.get("state") == "streaming" for s in streams.values())}


def serve_config(work: Path, rds: RedisServer, broker: MqttBroker, receiver: Receiver, camera: RtspServer,
                 args: argparse.Namespace) -> Path:
    import yaml

    sources = [{"name": f"file{i}", "url": str(FILES[i % len(FILES)]), "loop": True, "analysed_fps": args.fps}
               for i in range(args.files)]
    sources.append({"name": "rtsp", "url": camera.url, "analysed_fps": args.fps})
    config = {"port": args.port, "token": TOKEN, "data_dir": str(work / "data"), "models": [args.model],
              "weights_dir": str(args.weights_dir), "sources": sources, "redis": rds.url,
              "alerts": {"webhooks": [{"name": "soak", "url": receiver.url, "secret_env": SECRET_ENV}]},
              "mqtt": {"url": broker.url, "topic_prefix": "soak"},
              **({"verdict": TWITCHY} if args.verdict == "twitchy" else {})}
    path = work / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def watch_page(base: str, seen: Counter) -> None:
    """A page's websocket, read for the whole run (reconnecting if it drops)."""
    import aiohttp

    while True:
        try:
            async with aiohttp.ClientSession() as http, http.ws_connect(
                    base.replace("http", "ws") + "/ws", headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
                async for msg in ws:
                    seen[json.loads(msg.data).get("type", "?")] += 1
        except (aiohttp.ClientError, OSError):
            await asyncio.sleep(1.0)


def churn(base: str) -> None:
    """Add a camera through the API and remove it (written to streams.json each time)."""
    import urllib.request

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    body = json.dumps({"url": CHURN_CAMERA, "name": "churn"}).encode()
    for method, path, data in (("POST", "/api/streams", body), ("DELETE", "/api/streams/churn", None)):
        req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30):
            pass
        time.sleep(1.0)


def audit(data: Path, receiver: Receiver, events: Subscriber, rds: RedisServer) -> dict:
    """Every alert message of serve's log against each channel: lost, repeated, left in a spool."""
    import redis

    from stream.live.bus.redis_bus import alerts_stream

    logged = [json.loads(line)["key"] for line in (data / "alerts.jsonl").read_text().splitlines() if line]
    spooled = {"redis": data / "alerts-spool.jsonl", "webhook": data / "webhooks" / "soak.queue.jsonl",
               "mqtt": data / "mqtt-events.jsonl"}
    client = redis.Redis.from_url(rds.url)
    got = {"webhook": Counter(p["key"] for p in receiver.posts if p["signed"]),
           "mqtt": Counter(json.loads(p)["key"] for _, p, _ in events.messages("soak/events")),
           "redis": Counter(f[b"key"].decode() for _, f in client.xrange(alerts_stream()))}
    client.close()
    out: dict = {"logged": len(logged), "logged_unique": len(set(logged))}
    for name, counts in got.items():
        left = {json.loads(x)["key"] for x in spooled[name].read_text().splitlines()} if spooled[name].exists() \
            else set()
        lost = [k for k in dict.fromkeys(logged) if k not in counts and k not in left]
        out[name] = {"received": sum(counts.values()), "lost": len(lost), "lost_keys": lost[:10],
                     "left_in_spool": len(left), "repeated": sum(n - 1 for n in counts.values() if n > 1),
                     "unknown": len(set(counts) - set(logged))}
    out["webhook"]["processed_twice"] = len(receiver.keys()) - len(set(receiver.keys()))
    return out


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="dfstream-soak-"))
    rds, broker = RedisServer(persistent=True).start(), MqttBroker(persistent=True).start()
    events = Subscriber(broker.port, "soak/events", client_id="soak-events", persistent=True)
    receiver, camera = Receiver(SECRET.encode()).up(), RtspServer(RTSP_CLIP).start()
    args.port = args.port or free_port()
    base = f"http://127.0.0.1:{args.port}"
    log = open(work / "serve.log", "w")  # noqa: SIM115 - closed in finally
    cmd = [sys.executable, "-m", "stream", "serve", "--config",
           str(serve_config(work, rds, broker, receiver, camera, args)), "--offline"]
    serve = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, SECRET_ENV: SECRET})
    rows: list[dict] = []
    missed: list[dict] = []  # samples serve did not answer
    outages: list[dict] = []
    page: Counter = Counter()
    loop = asyncio.new_event_loop()
    try:
        proc = psutil.Process(serve.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert serve.poll() is None, (work / "serve.log").read_text()[-3000:]
            try:
                if json.loads(get(base + "/readyz")).get("ready"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "serve did not get ready"
            time.sleep(1.0)
        loop.create_task(watch_page(base, page))  # cancelled in `finally`
        start = time.monotonic()
        total = args.minutes * 60.0
        plan = [(REDIS_KILL_AT * total, "kill", "redis", rds), (REDIS_KILL_AT * total + args.outage_s, "start",
                 "redis", rds), (BROKER_KILL_AT * total, "kill", "mqtt", broker),
                (BROKER_KILL_AT * total + args.outage_s, "start", "mqtt", broker)]
        next_sample, next_churn = 0.0, CHURN_S / 2
        while (now := time.monotonic() - start) < total:
            assert serve.poll() is None, (work / "serve.log").read_text()[-3000:]
            while plan and now >= plan[0][0]:
                _, action, name, server = plan.pop(0)
                server.kill() if action == "kill" else server.start()
                outages.append({"t_s": round(now, 1), "action": action, "what": name})
                print(json.dumps(outages[-1]), flush=True)
            if now >= next_sample:
                try:
                    rows.append({"t_s": round(now, 1), **sample(proc, base), "page_messages": sum(page.values())})
                    print(json.dumps(rows[-1]), flush=True)
                except (OSError, ValueError) as exc:  # serve did not answer in time: a finding, not the end
                    missed.append({"t_s": round(now, 1), "error": f"{type(exc).__name__}: {exc}"})
                    print(json.dumps({"missed": missed[-1]}), flush=True)
                next_sample += SAMPLE_S
            if now >= next_churn:
                try:
                    churn(base)
                except OSError as exc:
                    missed.append({"t_s": round(now, 1), "error": f"churn: {type(exc).__name__}: {exc}"})
                next_churn += CHURN_S
            loop.run_until_complete(asyncio.sleep(0.5))  # the page's websocket runs meanwhile
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
            loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()
        serve.send_signal(signal.SIGTERM)
        try:
            stopped = serve.wait(STOP_TIMEOUT_S) == 0
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(30)
            stopped = False
        log.close()
        time.sleep(DRAIN_S)
        result = audit(work / "data", receiver, events, rds) if rows else {}
        events.close()
        receiver.close()
        camera.stop()
        broker.stop()
        rds.stop()
    return summary(args, rows, outages, result, stopped, work, missed)


def summary(args, rows, outages, channels, stopped, work, missed) -> dict:
    half = [r for r in rows if r["t_s"] >= args.minutes * 30.0]
    out: dict = {"command": "benchmarks/soak.py " + " ".join(sys.argv[1:]), "date": datetime.now(timezone.utc)
                 .strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, load "
                 f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", "minutes": args.minutes, "samples": len(rows),
                 "samples_second_half": len(half), "missed": missed, "outages": outages, "serve_stopped_cleanly": stopped,
                 "work_dir": str(work), "series": {}}
    for key in SERIES:
        values = [r[key] for r in half] or [0]
        out["series"][key] = {"slope_per_min": round(slope_per_min([(r["t_s"], r[key]) for r in half]), 3),
                              "first": values[0], "last": values[-1], "min": min(values), "max": max(values)}
    out["channels"] = channels
    s = out["series"]
    out["rss_ok"] = s["rss_mib"]["slope_per_min"] <= RSS_TARGET_MIB_PER_MIN
    out["threads_ok"] = s["threads"]["slope_per_min"] <= FLAT_PER_MIN
    out["open_files_ok"] = s["open_files"]["slope_per_min"] <= FLAT_PER_MIN
    out["alerts_ok"] = bool(channels) and all(channels[c]["lost"] == 0 and channels[c]["repeated"] == 0
                                              for c in ("webhook", "mqtt", "redis"))
    return out


def report(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)
    print(f"\n{result['command']}  ({result['date']}, {result['machine']}, {result['samples']} samples)")
    print(f"{'series (2nd half)':<18} {'slope/min':>10} {'first':>9} {'last':>9} {'min':>9} {'max':>9}")
    for key, s in result["series"].items():
        print(f"{key:<18} {s['slope_per_min']:>+10.3f} {s['first']:>9} {s['last']:>9} {s['min']:>9} {s['max']:>9}")
    channels = result["channels"]
    if channels:
        print(f"alert messages in serve's log: {channels['logged']} ({channels['logged_unique']} keys)")
        for name in ("webhook", "mqtt", "redis"):
            c = channels[name]
            print(f"{name:<8} received {c['received']:>6}  lost {c['lost']}  repeated {c['repeated']}  "
                  f"left in spool {c['left_in_spool']}")
    verdicts = {k: result[k] for k in ("rss_ok", "threads_ok", "open_files_ok", "alerts_ok")}
    print("within target" if all(verdicts.values()) else f"OUTSIDE TARGET: {verdicts}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long serve runs (default 30)")
    parser.add_argument("--files", type=int, default=4, help="looped file cameras (plus one RTSP camera)")
    parser.add_argument("--fps", type=float, default=5.0, help="analysed fps per stream")
    parser.add_argument("--outage-s", type=float, default=20.0, help="how long Redis, then the broker, are down")
    parser.add_argument("--model", default="meso4-f2f")
    parser.add_argument("--verdict", choices=("twitchy", "default"), default="twitchy",
                        help="twitchy: alerts start and end every few seconds (what the channel checks need)")
    parser.add_argument("--weights-dir", type=Path, default=SHARED / "weights" / "mesonet")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.minutes * 60 * (1 - BROKER_KILL_AT) <= args.outage_s + 2 * SAMPLE_S:
        parser.error("--minutes too short for the broker's outage and a few samples after it")
    if not FILES:
        parser.error(f"no shared clips under {SHARED / 'data' / 'ffpp-c23' / 'fake'}")
    report(run(args))


if __name__ == "__main__":
    main()
