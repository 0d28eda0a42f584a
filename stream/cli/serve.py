"""`dfstream serve`: the live detector. Sources in, overlays, status and alerts out on a websocket (and Redis).

Command-line values override the YAML config's; options left unset keep the config's value, so their
parser defaults are None here (the config's own defaults apply: auto backend, fp32, `--model auto`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stream.cli.common import BACKEND_HELP, EXIT_OK, add_backend, add_calibrate, add_device, add_model, add_offline, \
    add_calibration, add_precision, add_weights_dir, device, int8_crops, warn_auto


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="run the live detector: sources in, overlays out on a websocket")
    p.add_argument("--source", action="append", dest="sources", default=[], metavar="URL_OR_PATH",
                   help="rtsp:// or rtsps:// camera, video file or /dev/videoN (repeatable)")
    p.add_argument("--loop", action="store_true", help="replay file sources forever (demos)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8080)")
    p.add_argument("--config", type=Path, default=None, help="YAML config (cameras, models, thresholds)")
    p.add_argument("--token", default=None, help="access token, required when binding beyond loopback")
    add_backend(p, default=None, help=f"{BACKEND_HELP} (default: the config's, else auto)")
    add_precision(p, default=None, help="fp32 (default), fp16 (CUDA: torch or TensorRT) or int8 (ONNX Runtime or "
                                        "TensorRT, calibrated on --calibrate)")
    add_calibrate(p)
    add_model(p, help="model to run (repeatable). Default: the config's, else auto (the strongest this machine "
                      "runs; `dfstream models list` shows the pick). A voice model (aasist, aasist-l...) named here "
                      "judges the streams' sound, as with --voice-model")
    p.add_argument("--voice-model", action="append", dest="voice_models", default=None, metavar="NAME",
                   help="voice model judging every stream's sound (repeatable; the config's voice.models otherwise; "
                        "none: sound is not judged)")
    add_weights_dir(p)
    add_calibration(p)
    add_offline(p)
    add_device(p)
    p.add_argument("--redis", default=None, metavar="URL",
                   help="also publish to Redis: pub/sub for overlays and status, a Stream for alerts")
    p.add_argument("--ray", default=None, metavar="HOST:PORT",
                   help="be the gateway of a dfstream cluster (dfstream cluster head): every configured or "
                        "API-added camera runs on the cluster; needs --redis, which carries their messages back")
    p.add_argument("--node-pipeline", default=None, metavar="MODULE:FUNCTION",
                   help="with --ray: the nodes build engines and detector with FUNCTION(serve_config, device) "
                        "instead of loading the models (custom pipelines, tests)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="alert log, spool and evidence (default: $DFSTREAM_DATA or ~/.local/share/dfstream)")
    p.add_argument("--burn-in", action="store_true",
                   help="also write each alert's recording with the boxes drawn in (recording_burned.mp4)")
    p.add_argument("--log-level", default="INFO")
    from stream.cli.explain import add_explanation_args

    add_explanation_args(p)  # what the page's "Explain" button cites and who writes it
    p.set_defaults(run=run)
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    """The ServeConfig: `--config`'s YAML with the command line on top, a token made up when one is needed."""
    import secrets

    from stream.config.serve import load_config, source_name_for
    from stream.live.sources.live import SourceConfig, validate_url

    taken: set[str] = set()
    sources = []
    for url in args.sources:
        validate_url(url)
        name = source_name_for(url, taken)
        taken.add(name)
        sources.append(SourceConfig(name=name, url=url, loop=args.loop).model_dump())
    face_models, voice_models = split_models(args.models, args.voice_models)
    config = load_config(args.config, {"host": args.host, "port": args.port, "token": args.token,
                                       "models": face_models, "weights_dir": args.weights_dir,
                                       "backend": args.backend, "precision": args.precision, "sources": sources,
                                       "redis": args.redis, "data_dir": args.data_dir,
                                       "calibration": args.calibration})
    if voice_models is not None:
        config = config.model_copy(update={"voice": config.voice.model_copy(update={"models": voice_models})})
    if config.needs_token and not config.token:
        config = config.model_copy(update={"token": secrets.token_urlsafe(16)})
    if getattr(args, "burn_in", False):
        config = config.model_copy(update={"evidence": config.evidence.model_copy(update={"burn_in": True})})
    return config


def split_models(models: list[str] | None, voice_models: list[str] | None) -> tuple[list[str] | None, list[str] | None]:
    """--model's face models and the voice models of --model and --voice-model (None: the config's)."""
    if not models:
        return models, voice_models
    from engines.voices import is_voice_model

    voices = [m for m in models if is_voice_model(m)]
    faces = [m for m in models if not is_voice_model(m)] or None
    if voices or voice_models:
        return faces, [*(voice_models or []), *voices]
    return faces, None


def alert_explainer(config: Any, args: argparse.Namespace, engines: list[Any], on_device: str) -> Any:
    """The "Explain" button's builder: the alert's engine rebuilt for Grad-CAM (torch, with the serving engine's
    calibration), its own MTCNN, the knowledge bases and the LLM settings. Everything loads on first use, on the
    explain worker thread."""
    from stream.cli.explain import llm_settings, retriever_factory
    from stream.jobs.explain.alerts import AlertExplainer

    serving = {e.name: e for e in engines}

    def engine(name: str) -> Any:
        from engines.calibration import attach, calibration_of
        from engines.registry import build_engine

        built = build_engine(name, weights_dir=config.weights_dir, device=on_device, allow_download=not args.offline)
        if name in serving:
            attach(built, calibration_of(serving[name]))
        return built

    def detector() -> Any:
        from stream.live.faces import FaceDetector

        return FaceDetector(config.detector.model_copy(update={"device": on_device}))

    return AlertExplainer(config.data_dir, retriever_factory(args), engine, detector, llm_settings(args))


def run(args: argparse.Namespace) -> int:
    import logging

    from stream.live.server.malloc import cap_arenas

    cap_arenas()  # before serve's threads exist: a long run's RSS stays flat (malloc.py says why)
    from aiohttp import web

    from stream.live.faces import FaceDetector
    from stream.live.server.app import build_app
    from stream.live.server.service import LiveService
    from stream.live.sources.urls import redact

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    pipeline = None
    if args.node_pipeline and not args.ray:
        raise ValueError("--node-pipeline is for the nodes of a cluster: use it with --ray")
    if args.ray:  # refused before any engine loads: a gateway without Redis would show no camera
        from stream.cluster.pipeline import Pipeline

        pipeline = Pipeline.from_serve(config, offline=args.offline, device=args.device, factory=args.node_pipeline)
    on_device = device(args)
    from stream.live.assembly import check_voice_models, serve_engines

    check_voice_models(config.voice.models)  # a wrong name is refused before any engine loads

    built = serve_engines(config, on_device, args.offline, int8_crops(args.calibrate), progress=True)
    engines, ensemble = built.engines, built.ensemble
    warn_auto(built.auto)
    from stream.live.assembly import serve_voice_engines

    voice_engines = serve_voice_engines(config, on_device, args.offline)
    from engines.quality import smallest_floor_px

    detector = FaceDetector(config.detector.model_copy(update={"device": on_device}), smallest_floor_px(engines))
    remote = None
    if pipeline is not None:  # Ray is imported only here: a plain serve never loads it
        from stream.cluster.gateway import ClusterCameras

        remote = ClusterCameras(args.ray, pipeline)
    app = build_app(LiveService(config, engines, detector, ensemble, remote=remote, auto=built.auto,
                                voice_engines=voice_engines),
                    alert_explainer(config, args, engines, on_device))
    shown = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    query = f"?token={config.token}" if config.needs_token else ""
    print(f"dfstream serve: {len(config.sources)} source(s): "
          f"{', '.join(redact(s.url) for s in config.sources) or 'none yet'}", flush=True)
    print(f"dfstream serve: model {'+'.join(e.name for e in engines)}"
          f"{f' (auto: {built.auto.why})' if built.auto else ''}", flush=True)
    print(f"dfstream serve: open http://{shown}:{config.port}/{query}  (websocket /ws)", flush=True)
    if args.ray:
        print(f"dfstream serve: cameras run on the cluster at {args.ray}", flush=True)
    if voice_engines:
        print(f"dfstream serve: voices judged by {', '.join(e.name for e in voice_engines)} "
              f"({'alerting' if config.voice.rule == 'either' else 'shown, never alerting'})", flush=True)
    print(f"dfstream serve: alerts -> {config.data_dir / 'alerts.jsonl'}"
          f"{' and ' + redact(config.redis) if config.redis else ''}", flush=True)
    channels = [f"webhook {h.label}" for h in config.alerts.webhooks]
    if config.mqtt:
        channels.append(f"mqtt {config.mqtt.host}:{config.mqtt.port} ({config.mqtt.topic_prefix}/...)")
    if channels:
        print(f"dfstream serve: alert channels: {', '.join(channels)}", flush=True)
    web.run_app(app, host=config.host, port=config.port, print=None, handle_signals=True)
    return EXIT_OK
