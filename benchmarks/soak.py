"""Soak test of `serve`: the real app (aiohttp, LiveService, MTCNN and the engine) on a loopback port for a long
time, with N looped file sources, a websocket client reading overlays, a /metrics and /readyz scrape every 10 s
and, once a minute, a camera added and removed through the API (so persistence, status and removal paths churn).

Every 10 s it samples the process's RSS, thread count and open files (psutil). After the warm-up it prints the
least-squares slope of each, and the first, last and largest value. Target: RSS <= 1 MiB/min, and no growth in
threads or open files (the last sample no higher than the first after warm-up).

    .venv/bin/python benchmarks/soak.py --minutes 30 --streams 4
    .venv/bin/python benchmarks/soak.py --minutes 3 --streams 2 --warmup-minutes 1   # a short check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's packages, not this folder's engines.py benchmark

import psutil

SHARED_VIDEOS = sorted((ROOT.parent / "shared" / "data" / "ffpp-c23").glob("*/*.mp4"))
SAMPLE_S = 10.0
CHURN_S = 60.0
RSS_TARGET_MIB_PER_MIN = 1.0
CHURN_CAMERA = "rtsp://127.0.0.1:9/soak"  # nothing listens: reconnects quietly


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) pairs, per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    return 0.0 if den == 0 else 60.0 * sum((t - mt) * (v - mv) for t, v in samples) / den


def sample(proc: psutil.Process) -> dict[str, float]:
    return {"rss_mib": proc.memory_info().rss / 2**20, "threads": proc.num_threads(), "open_files": proc.num_fds()}


async def soak(args: argparse.Namespace) -> dict:
    import aiohttp
    from aiohttp import web

    from engines.registry import build_engine
    from stream.config.serve import ServeConfig
    from stream.config.sources import SourceConfig
    from stream.live.faces import FaceDetector
    from stream.live.server.app import build_app
    from stream.live.server.service import LiveService

    if not SHARED_VIDEOS:
        raise SystemExit(f"no shared clips under {ROOT.parent / 'shared' / 'data' / 'ffpp-c23'}")
    data = Path(tempfile.mkdtemp(prefix="dfstream-soak-"))
    sources = [SourceConfig(name=f"cam{i}", url=str(SHARED_VIDEOS[i % len(SHARED_VIDEOS)]), loop=True,
                            analysed_fps=args.fps) for i in range(args.streams)]
    config = ServeConfig(port=args.port, data_dir=data, sources=sources, models=[args.model])
    engine = build_engine(args.model, weights_dir=args.weights_dir, allow_download=False)
    service = LiveService(config, [engine], FaceDetector(config.detector))
    runner = web.AppRunner(build_app(service))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    proc = psutil.Process()
    start = time.monotonic()
    end = start + args.minutes * 60.0
    warm_until = start + args.warmup_minutes * 60.0
    rows: list[dict] = []
    overlays = 0
    churns = 0

    async def read_overlays(http: aiohttp.ClientSession) -> None:
        nonlocal overlays
        async with http.ws_connect(base.replace("http", "ws") + "/ws") as ws:
            async for msg in ws:
                overlays += json.loads(msg.data).get("type") == "overlay"

    async with aiohttp.ClientSession() as http:
        reader = asyncio.create_task(read_overlays(http))
        next_sample, next_churn = start, start + CHURN_S / 2
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                async with http.get(base + "/metrics") as r:
                    await r.read()
                async with http.get(base + "/readyz") as r:
                    ready = (await r.json())["ready"]
                row = {"t_s": round(now - start, 1), **sample(proc), "overlays": overlays, "ready": ready}
                rows.append(row)
                print(json.dumps(row), flush=True)
                next_sample += SAMPLE_S
            if now >= next_churn:  # add and remove a camera through the API (written to streams.json)
                async with http.post(base + "/api/streams", json={"url": CHURN_CAMERA, "name": "churn"}) as r:
                    assert r.status == 201, await r.text()
                await asyncio.sleep(1.0)
                async with http.delete(base + "/api/streams/churn") as r:
                    assert r.status == 200, await r.text()
                churns += 1
                next_churn += CHURN_S
            await asyncio.sleep(0.5)
        reader.cancel()
    await runner.cleanup()

    warm = [r for r in rows if r["t_s"] >= warm_until - start]
    result: dict = {"minutes": args.minutes, "warmup_minutes": args.warmup_minutes, "streams": args.streams,
                    "model": args.model, "analysed_fps": args.fps, "samples_after_warmup": len(warm),
                    "overlays": overlays, "churns": churns}
    for key in ("rss_mib", "threads", "open_files"):
        series = [(r["t_s"], r[key]) for r in warm]
        values = [v for _, v in series] or [0]
        result[key] = {"slope_per_min": round(slope_per_min(series), 3), "first": values[0], "last": values[-1],
                       "max": max(values)}
    result["rss_ok"] = result["rss_mib"]["slope_per_min"] <= RSS_TARGET_MIB_PER_MIN
    result["threads_ok"] = result["threads"]["last"] <= result["threads"]["first"]
    result["open_files_ok"] = result["open_files"]["last"] <= result["open_files"]["first"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--warmup-minutes", type=float, default=5.0, help="samples before this are not fitted")
    parser.add_argument("--fps", type=float, default=5.0, help="analysed fps per stream")
    parser.add_argument("--model", default="meso4-df")
    parser.add_argument("--weights-dir", type=Path, default=ROOT.parent / "shared" / "weights" / "mesonet")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.warmup_minutes >= args.minutes:
        parser.error("--warmup-minutes must be shorter than --minutes")
    result = asyncio.run(soak(args))
    print("RESULT " + json.dumps(result), flush=True)
    ok = result["rss_ok"] and result["threads_ok"] and result["open_files_ok"]
    print(f"RSS {result['rss_mib']['slope_per_min']:+.3f} MiB/min (target <= {RSS_TARGET_MIB_PER_MIN}), "
          f"threads {result['threads']['first']} -> {result['threads']['last']}, "
          f"open files {result['open_files']['first']} -> {result['open_files']['last']}: "
          f"{'within target' if ok else 'OUTSIDE TARGET'}", flush=True)


if __name__ == "__main__":
    main()
