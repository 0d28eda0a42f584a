"""`dfstream explain`: Grad-CAM heatmaps of the most fake-looking faces of one video or image and, with `--cite`
(or `--alert ID`), an explanation grounded in cited passages, written by the template or an optional LLM.

It runs the torch network whatever the backend elsewhere: Grad-CAM needs its gradients."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stream.cli.common import (EXIT_INPUT_FAILED, EXIT_OK, add_calibration, add_model_args,
                               device, face_detector)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("explain", help="Grad-CAM heatmaps, and with --cite or --alert an explanation with "
                                              "numbered citations from the literature")
    p.add_argument("path", type=Path, metavar="PATH", nargs="?", help="a video or image (or use --alert)")
    add_model_args(p)
    add_calibration(p)
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the PNGs, heatmaps.npz, explanations.json (and explanation.md/.json with "
                        "--cite); with --alert the default is the alert's evidence folder")
    p.add_argument("--top", type=int, default=8, help="face-frames explained: those with the highest p_fake")
    p.add_argument("--fps", type=float, default=None, help="frames analysed per second of video (default 5)")
    p.add_argument("--faces", choices=["mtcnn", "none"], default="mtcnn",
                   help="'none' explains the whole frame (for already-cropped faces)")
    add_cite_args(p)
    p.add_argument("--alert", metavar="ID", default=None,
                   help="explain a served alert from its evidence snapshot and clip (DATA_DIR/evidence/ID)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="serve's data folder, for --alert (default: $DFSTREAM_DATA or ~/.local/share/dfstream)")
    p.set_defaults(run=run)
    return p


def add_cite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cite", action="store_true", help="write explanation.md and explanation.json with numbered "
                                                       "citations (implied by --alert)")
    add_explanation_args(p)


def add_explanation_args(p: argparse.ArgumentParser) -> None:
    """Where cited explanations come from: knowledge bases, the embedding model, the LLM (explain and serve)."""
    p.add_argument("--kb", type=Path, action="append", default=None, metavar="KB_DIR",
                   help="a knowledge base from `dfstream kb build`, searched with the built-in one (repeatable)")
    p.add_argument("--embed-model", default=None, metavar="NAME_OR_DIR",
                   help="sentence-transformers model for dense retrieval (default: $DFSTREAM_EMBED_MODEL or "
                        "all-MiniLM-L6-v2 when cached); without it retrieval is BM25 only")
    p.add_argument("--llm-url", default=None, help="OpenAI-compatible endpoint, e.g. https://api.groq.com/openai/v1 "
                                                   "(default $DFSTREAM_LLM_URL); the key only from $DFSTREAM_LLM_KEY")
    p.add_argument("--llm-model", default=None, help="chat model (default $DFSTREAM_LLM_MODEL or "
                                                     "llama-3.3-70b-versatile)")
    p.add_argument("--llm-timeout", type=float, default=None, help="seconds before the template is used (30)")


def retriever_factory(args: argparse.Namespace):
    """() -> Retriever over the built-in KB and --kb folders, dense when the embedding model is here."""
    def make():
        from stream.jobs.explain import kb
        from stream.jobs.explain.retrieve import Retriever, load_embedder

        kbs = [kb.builtin(), *(kb.load(d) for d in args.kb or [])]
        embedder, note = load_embedder(args.embed_model, allow_download=not args.offline)
        return Retriever(kbs, embedder, note)
    return make


def llm_settings(args: argparse.Namespace):
    from stream.jobs.explain.llm import LLMSettings

    return LLMSettings.from_env(args.llm_url, args.llm_model, args.llm_timeout)


def run(args: argparse.Namespace) -> int:
    if args.alert:
        if args.path is not None:
            raise ValueError("give a PATH or --alert ID, not both")
        return run_alert(args)
    if args.path is None:
        raise ValueError("give a video or image PATH, or --alert ID")
    if args.out is None:
        raise ValueError("--out is required with a PATH")
    return run_path(args)


def _engine(args: argparse.Namespace, name: str):
    from engines.registry import build_engine
    from stream.live.assembly import attach_calibrations

    engine = build_engine(name, weights_dir=args.weights_dir, weights_file=args.weights, device=device(args),
                          allow_download=not args.offline)
    attach_calibrations([engine], args.calibration)
    return engine


def run_alert(args: argparse.Namespace) -> int:
    from stream.config.paths import default_data_dir
    from stream.jobs.explain.alerts import AlertExplainer

    if args.models and len(args.models) != 1:
        raise ValueError("explain takes exactly one --model")
    data_dir = args.data_dir or default_data_dir()
    explainer = AlertExplainer(data_dir, retriever_factory(args), lambda name: _engine(args, name),
                               (lambda: face_detector(args)) if args.faces == "mtcnn" else None, llm_settings(args),
                               top=min(args.top, 8))
    record = explainer(args.alert, model=args.models[0] if args.models else None, out=args.out)
    where = args.out or data_dir / "evidence" / args.alert
    _print_record(record, where)
    return EXIT_OK


def _print_record(record: dict, where: Path) -> None:
    print(record["text"])
    for c in record["citations"]:
        print(f"[{c['n']}] {c['reference']}")
    for note in [record.get("llm_note"), *record["retrieval"]["notes"]]:
        if note:
            print(f"note: {note}", file=sys.stderr)
    print(f"-> {where / 'explanation.md'}", file=sys.stderr)


def run_path(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from engines.registry import DEFAULT_MODEL, get_entry
    from stream.jobs.explain import explain_top, write_explanations
    from stream.jobs.scan import READ_ERRORS, Scanner, ScanOptions

    names = args.models or [DEFAULT_MODEL]
    if len(names) != 1:
        raise ValueError("explain takes exactly one --model")
    engine = _engine(args, names[0])
    detector = face_detector(args)
    scanner = Scanner([engine], [get_entry(names[0]).threshold], ScanOptions(fps=args.fps, faces=args.faces),
                      detector)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[frames]} frames"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"explaining {args.path.name}", frames=0)

        def counted(batches):
            frames = 0
            for batch in batches:
                frames += batch.frames
                progress.update(task, frames=frames)
                yield batch

        try:
            items = explain_top(engine, counted(scanner.face_batches(args.path)), args.top)
        except READ_ERRORS as exc:
            print(f"dfstream explain: {exc}", file=sys.stderr)
            return EXIT_INPUT_FAILED
    summary = write_explanations(args.out, args.path, engine.name, items)
    for e in summary["explanations"]:
        print(f"{e['rank']:>2}. frame {e['frame']:>5} track {e['track']:>3} p_fake {e['p_fake']:.3f} -> "
              f"{args.out / e['image']}")
    if args.cite:
        import numpy as np

        from stream.jobs.explain.regions import crop_landmarks
        from stream.jobs.explain.report import explain_with_citations, facts_of, write

        landmarks = crop_landmarks(detector, np.stack([i.crop for i in items]))
        facts = facts_of(str(args.path), engine, items, landmarks, get_entry(names[0]).threshold)
        record = explain_with_citations(facts, retriever_factory(args)(), llm_settings(args))
        record["image"] = summary["explanations"][0]["image"]
        write(args.out, record)
        _print_record(record, args.out)
    return EXIT_OK
