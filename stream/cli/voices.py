"""The voice side of `scan` and `eval` (`--modality voice|both`): which models are voices, building them, running.

Not a command of its own: `stream.cli.scan` and `stream.cli.eval` hand over to it when the modality is not `face`,
so their own modules stay the face path. Imports nothing heavy at the top, like every CLI module.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

from stream.cli.common import EXIT_INPUT_FAILED, EXIT_OK, device, print_table

MODALITIES = ("face", "voice", "both")
MODALITY_HELP = ("what to judge: faces (default), the voice of the audio track (audio files too), or both; "
                 "default voice when every --model is a voice model")
COLOURS = {"fake": "red", "real": "green", "low-quality": "grey50", "no-audio": "yellow", "error": "magenta"}


def add_modality(p: argparse.ArgumentParser) -> None:
    p.add_argument("--modality", choices=MODALITIES, default=None, help=MODALITY_HELP)


def split_models(names: list[str] | None) -> tuple[list[str], list[str]]:
    """`--model` names as (face models, voice models), in the order given."""
    from engines.registry import VOICE_MODELS

    names = names or []
    return [n for n in names if n not in VOICE_MODELS], [n for n in names if n in VOICE_MODELS]


def modality(args: argparse.Namespace) -> str:
    """The modality asked for, or inferred (voice when every named model is a voice model); refuses a model of
    the other modality than the one named."""
    faces, voices = split_models(args.models)
    chosen = args.modality or ("voice" if voices and not faces else "face")
    if chosen == "face" and voices:
        raise ValueError(f"{', '.join(voices)}: voice model(s); judge voices with --modality voice or both")
    if chosen == "voice" and faces:
        raise ValueError(f"{', '.join(faces)}: face model(s); --modality voice takes voice models only "
                         "(--modality both takes both)")
    if chosen != "face" and args.weights and (chosen == "both" or len(args.models or []) != 1):
        raise ValueError("--weights needs exactly one --model (and one modality)")
    return chosen


def load_voice_engines(args: argparse.Namespace) -> tuple[list[Any], list[float]]:
    """The voice `--model` engines (default aasist) and their thresholds."""
    from engines.voices import DEFAULT_VOICE_MODEL, build_voice_engine, voice_threshold

    names = split_models(args.models)[1] or [DEFAULT_VOICE_MODEL]
    engines = [build_voice_engine(n, weights_dir=args.weights_dir, weights_file=args.weights, device=device(args),
                                  allow_download=not args.offline) for n in names]
    return engines, [voice_threshold(n) for n in names]


def face_args(args: argparse.Namespace) -> argparse.Namespace:
    """A copy of `args` whose --model lists only the face models (the default face model when none)."""
    out = copy.copy(args)
    out.models = split_models(args.models)[0] or None
    return out


# -- scan ----------------------------------------------------------------------------------------------------

def run_scan(args: argparse.Namespace, chosen: str, face_baseline: Any = None) -> int:
    """`scan --modality voice|both`: a voice verdict per input (and, with both, the face verdict beside it); each
    judged at its camera baseline's bar where `--baseline` gave one (`args.voice_baseline`, `face_baseline`)."""
    from stream.jobs.voice_scan import VoiceScanner

    engines, thresholds = load_voice_engines(args)
    voice_baseline = getattr(args, "voice_baseline", None)
    if voice_baseline is not None:
        from stream.live.verdicts.baseline import check, engine_keys

        check(voice_baseline[1], voice_baseline[0], engine_keys(engines), modality="voice")
    voices = VoiceScanner(engines, thresholds, hop_s=1.0 / voice_baseline[1].fps if voice_baseline else None)
    faces = face_scanner(face_args(args)) if chosen == "both" else None
    if faces is not None and face_baseline is not None:
        from stream.live.verdicts.baseline import check, engine_keys, sha256_json

        ensemble = faces.scorer.ensemble
        check(face_baseline, args.baseline, engine_keys(faces.engines),
              sha256_json(ensemble) if ensemble is not None else None)
    rows, failed = [], False
    for path in args.paths:
        voice = voices.scan(path) if voice_baseline is None else _judge_voice(voices, path, voice_baseline[1])
        face = scan_faces(faces, path, voice, face_baseline) if faces is not None else None
        failed |= voice.label == "error" or (face is not None and face.label == "error")
        if args.json:
            out = voice.to_json() if face is None else {"path": str(path), "modality": "both",
                                                        "face": face.to_json(), "voice": voice.to_json()}
            print(json.dumps(out), flush=True)
        rows.append((path, face, voice))
    if not args.json:
        print_scan(rows, voices)
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def face_scanner(args: argparse.Namespace) -> Any:
    from stream.cli.common import face_detector, load_models
    from stream.jobs.scan import Scanner, ScanOptions

    engines, thresholds, ensemble = load_models(args)
    return Scanner(engines, thresholds, ScanOptions(fps=args.fps, faces=args.faces), face_detector(args),
                   ensemble=ensemble)


def scan_faces(scanner: Any, path: Path, voice: Any, baseline: Any = None) -> Any:
    """The face verdict of `path` (at the face baseline's bar when given); a readable audio-only file is `no-face`
    (no video track), not an error."""
    from stream.jobs.baseline import scan as scan_with
    from stream.jobs.scan import ScanResult
    from stream.live.voices.decode import has_video

    if voice.label != "error" and not has_video(path):
        return ScanResult(path=str(path), label="no-face", score=None, threshold=scanner.threshold, frames_scored=0,
                          tracks=[], model=scanner.model_name, reason="no video track")
    return scanner.scan(path) if baseline is None else scan_with(scanner, path, baseline)


def _judge_voice(scanner: Any, path: Path, baseline: Any) -> Any:
    from stream.jobs.voice_baseline import judge_voice

    return judge_voice(scanner, path, baseline)


def print_scan(rows: list, voices: Any) -> None:
    from rich.table import Table

    first = rows[0][2]
    bar = "voice camera baseline" if first.baseline is not None else "threshold"
    table = Table(title=f"dfstream scan (voice: {voices.model_name}, {bar} {first.threshold:.2f})")
    both = any(face is not None for _, face, _ in rows)
    columns = ["input"] + (["face", "face p(fake)"] if both else []) + ["voice", "voice p(fake)", "windows", "note"]
    for col in columns:
        table.add_column(col, justify="right" if "p(fake)" in col or col == "windows" else "left")
    for path, face, voice in rows:
        cells = [str(path)]
        if both:
            cells += [face.label, "" if face.score is None else f"{face.score:.3f}"]
        cells += [f"[{COLOURS[voice.label]}]{voice.label}[/]", "" if voice.score is None else f"{voice.score:.3f}",
                  str(len({(w.start_s, w.end_s) for w in voice.judged})), voice.error or voice.reason or ""]
        table.add_row(*cells)
    print_table(table)


# -- eval ----------------------------------------------------------------------------------------------------

def run_eval(args: argparse.Namespace) -> int:
    """`eval --modality voice`: AUC and EER per file and per window, per generator, into metrics.json."""
    from stream.jobs.datasets import VOICE_SUFFIXES, discover
    from stream.jobs.voice_eval import evaluate_voices, voice_metrics, write_voice_report
    from stream.jobs.voice_scan import VoiceScanner

    dataset = discover(args.dataset, suffixes=VOICE_SUFFIXES)  # a bad dataset fails before any model loads
    engines, thresholds = load_voice_engines(args)
    threshold = args.threshold if args.threshold is not None else sum(thresholds) / len(thresholds)
    scanner = VoiceScanner(engines, [threshold])
    items = evaluate_voices(dataset, scanner, progress=lambda item, r: _note(item.path, r))
    metrics = write_voice_report(items, voice_metrics(items, threshold, [e.name for e in engines]), args.out)
    print_eval(metrics, args.out)
    return EXIT_INPUT_FAILED if metrics["unscored"].get("error") else EXIT_OK


def _note(path: Path, result: Any) -> None:
    import sys

    if result.label in ("error", "no-audio", "low-quality"):
        print(f"dfstream eval: not scored {path}: {result.error or result.reason}", file=sys.stderr)


def print_eval(metrics: dict, out: Path) -> None:
    from rich.table import Table

    def fmt(v: float | None, pct: bool = False) -> str:
        return "-" if v is None else (f"{100 * v:.1f} %" if pct else f"{v:.3f}")

    table = Table(title=f"dfstream eval voices ({'+'.join(metrics['models'])}, threshold "
                        f"{metrics['threshold']:.2f}) -> {out}")
    for col in ("subset", "level", "n (real/fake)", "accuracy", "AUC", "EER"):
        table.add_column(col, justify="left" if col in ("subset", "level") else "right")
    rows = [("all", "file", metrics["file"]), ("all", "window", metrics["window"])]
    rows += [(f"{g} vs reals", "file", m) for g, m in metrics["generators"].items()]
    for subset, level, m in rows:
        table.add_row(subset, level, f"{m['n']} ({m['real']}/{m['fake']})", fmt(m["accuracy"]), fmt(m["auc"]),
                      fmt(m["eer"], pct=True))
    print_table(table)
