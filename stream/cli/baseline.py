"""`dfstream baseline`: learn a camera's bar ("learn normal") from footage you vouch for as real.

    dfstream baseline MEDIA... --out FILE [--model NAME] [--alpha A] [--seconds N] [--modality face|voice|both]

MEDIA are video files or one live address (rtsp://, /dev/video0); `--seconds` takes the first N seconds of each
(a live source needs it). The file is refused by `scan`, `eval` and `serve` (a source's `baseline:`) for other
weights. Nothing is
written when the footage cannot vouch for the camera (too short, low-quality, already called fake).

`--modality voice` learns the voice bar from the files' speech (a file with `modality: voice`, keyed by the voice
engine's weights); `both` learns each and writes the face file at FILE and the voice file beside it
(`voice_path`). With both, a part the footage cannot vouch for is refused with its reason while the other is
written (exit 1); nothing written at all is an error (exit 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stream.cli.common import EXIT_INPUT_FAILED, EXIT_OK, add_backend, add_calibration, add_model_args, \
    face_detector, load_models
from stream.cli.voices import add_modality, face_args, modality

BASELINE_HELP = ("a camera baseline (dfstream baseline): judge with the camera's bar, learned from its own "
                 "real footage, instead of the global one")
VOICES_HELP = "; give it twice for --modality both (a face file and a voice file: each file says which it is)"


def add_baseline(p: argparse.ArgumentParser, voices: bool = False) -> None:
    """`--baseline FILE` for scan (a face and a voice file: `voices`) and eval (faces)."""
    if voices:
        p.add_argument("--baseline", type=Path, action="append", default=None, metavar="FILE",
                       help=BASELINE_HELP + VOICES_HELP)
    else:
        p.add_argument("--baseline", type=Path, default=None, metavar="FILE", help=BASELINE_HELP)


def voice_path(out: Path) -> Path:
    """Where `--modality both` writes the voice baseline: beside FILE, `cam.json` -> `cam.voice.json`."""
    return out.with_name(f"{out.stem}.voice{out.suffix or '.json'}")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("baseline", help="learn a camera's bar from footage you vouch for as real")
    p.add_argument("media", nargs="+", metavar="MEDIA",
                   help="video files, or a live address (rtsp://..., /dev/video0) with --seconds")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the baseline JSON to write")
    add_model_args(p)
    p.add_argument("--alpha", type=float, default=None,
                   help="the false-alarm rate the camera bar keeps (default verdict.baseline.alpha, 0.01)")
    p.add_argument("--direction", choices=["above", "both"], default=None,
                   help="what the camera bar flags: above its normal (default), or also below a lower bar, called "
                        "'unlike this camera' (both, experimental: alpha split between the bars)")
    p.add_argument("--seconds", type=float, default=None, metavar="N",
                   help="learn from the first N seconds of each input (required for a live source)")
    p.add_argument("--fps", type=float, default=None,
                   help="frames analysed per second (default 5, the live default analysed_fps)")
    p.add_argument("--allow-fake", action="store_true",
                   help="learn even where the global bar already calls a face fake (a camera known to be noisy)")
    add_backend(p)
    add_calibration(p)
    add_modality(p)
    p.set_defaults(run=run, precision="fp32", calibrate=None, cache_dir=None, faces="mtcnn")
    return p


def policy_for(args: argparse.Namespace, voice: bool = False) -> Any:
    """The verdict policy (the faces', or the voice's own) with the command line's alpha, direction and
    --allow-fake."""
    from stream.config.verdicts import VerdictPolicy
    from stream.config.voices import VOICE_VERDICT

    if args.alpha is not None and not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must be between 0 and 1 (a false-alarm rate), got {args.alpha:g}")
    base = VOICE_VERDICT if voice else VerdictPolicy()
    update = {"learn_on_fake": args.allow_fake} | ({"alpha": args.alpha} if args.alpha is not None else {})
    update |= {"direction": args.direction} if getattr(args, "direction", None) else {}
    return base.model_copy(update={"baseline": base.baseline.model_copy(update=update)})


def read_for_judging(args: argparse.Namespace, modality: str = "face", voices: bool = False) -> Any:
    """The `--baseline` file(s) of scan or eval, read and sorted by the modality each says, before any model loads.
    Returns the face baseline (None without one) and sets `args.baseline` to its path and `args.voice_baseline` to
    (path, voice baseline) or None. Faces analyse at the baseline's rate (its smoothing window spans that many
    seconds), refusing another explicit --fps. A file of a modality not judged here is refused."""
    from stream.live.verdicts.baseline import BaselineError, read

    given = args.baseline if isinstance(args.baseline, list) else [args.baseline] if args.baseline else []
    found: dict[str, tuple[Path, Any]] = {}
    for path in given:
        b = read(path)
        if b.modality in found:
            raise BaselineError(f"{path}: a second {b.modality} baseline (the first: {found[b.modality][0]}); "
                                "give one file per modality")
        found[b.modality] = (path, b)
    args.baseline, args.voice_baseline = found.get("face", (None,))[0], found.get("voice")
    if "voice" in found and (modality == "face" or not voices):
        raise BaselineError(f"{found['voice'][0]}: a voice baseline; "
                            + ("judge voices with --modality voice or both" if voices else
                               "eval judges voices at the global bar (scan --modality voice takes it)"))
    if "face" in found and modality == "voice":
        raise BaselineError(f"{found['face'][0]}: a face baseline, and --modality voice judges voices only "
                            "(--modality both judges faces too)")
    if "face" not in found:
        return None
    baseline = found["face"][1]
    if args.fps is not None and baseline.fps is not None and args.fps != baseline.fps:
        raise BaselineError(f"{args.baseline}: learned at {baseline.fps:g} analysed fps; judging at --fps "
                            f"{args.fps:g} would smooth over another time span (leave --fps out)")
    args.fps = baseline.fps
    return baseline


def check_for_judging(baseline: Any, path: Path, engines: list[Any], ensemble: Any) -> None:
    """Refuse a baseline learned with other engines, weights, calibration or ensemble than these."""
    from stream.live.verdicts.baseline import check, engine_keys, sha256_json

    check(baseline, path, engine_keys(engines), sha256_json(ensemble) if ensemble is not None else None)


def run(args: argparse.Namespace) -> int:
    from stream.config.sources import SourceConfig
    from stream.live.verdicts.baseline import BaselineError, write

    chosen = modality(args)
    policy = policy_for(args, voice=chosen == "voice")  # a bad --alpha fails before any model loads
    if args.seconds is not None and args.seconds <= 0:
        raise ValueError(f"--seconds must be positive, got {args.seconds:g}")
    live = [m for m in args.media if SourceConfig(name="x", url=m).kind != "file"]
    if live and args.seconds is None:
        raise ValueError(f"{live[0]} is a live source: say how long to learn with --seconds N")
    if live and chosen != "face":
        raise ValueError(f"{live[0]}: a voice baseline learns from files (serve learns a live stream's voice: "
                         "POST /api/streams/NAME/baseline)")
    missing = [m for m in args.media if m not in live and not Path(m).is_file()]
    if missing:
        raise ValueError(f"{missing[0]}: no such file")
    parts = {"face": (lambda: _learn_faces(face_args(args) if chosen == "both" else args, policy), args.out),
             "voice": (lambda: _learn_voice(args), voice_path(args.out) if chosen == "both" else args.out)}
    written, refused = 0, []
    for which in (["face", "voice"] if chosen == "both" else [chosen]):
        learn, out = parts[which]
        try:
            baseline = learn()
        except BaselineError as exc:
            if chosen != "both":
                raise
            refused.append(f"the {which} part is refused, nothing written for it: {exc}")
            continue
        path = write(baseline, out)
        written += 1
        _report(baseline, path, f"{which}: " if chosen == "both" else "")
    for text in refused:
        print(f"dfstream baseline: {text}")
    if refused and not written:
        raise BaselineError("; ".join(refused))
    return EXIT_INPUT_FAILED if refused else EXIT_OK


def _learn_faces(args: argparse.Namespace, policy: Any) -> Any:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from stream.jobs.baseline import learn
    from stream.jobs.scan import Scanner, ScanOptions

    engines, _, ensemble = load_models(args)
    scanner = Scanner(engines, [policy.t_high], ScanOptions(fps=args.fps), face_detector(args), ensemble=ensemble)
    model = "+".join(args.models if args.models and args.models != ["auto"] else [e.name for e in engines])
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[frames]} frames"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"learning from {len(args.media)} input(s)", frames=0)
        frames = 0

        def count(n: int) -> None:
            nonlocal frames
            frames += n
            progress.update(task, frames=frames)

        return learn(scanner, args.media, policy, model=model, seconds=args.seconds, on_frames=count)


def _learn_voice(args: argparse.Namespace) -> Any:
    """The voice bar from the files' speech, under the voice's own verdict policy, windows every live hop."""
    from stream.cli.voices import load_voice_engines
    from stream.jobs.voice_baseline import HOP_S, learn_voice
    from stream.jobs.voice_scan import VoiceScanner

    engines, thresholds = load_voice_engines(args)
    scanner = VoiceScanner(engines, thresholds, hop_s=HOP_S)
    return learn_voice(scanner, args.media, policy_for(args, voice=True), model=scanner.model_name,
                       seconds=args.seconds)


def _report(baseline: Any, path: Path, prefix: str) -> None:
    print(f"dfstream baseline: {prefix}{baseline.summary()}")
    if baseline.rule == "bounded":
        per_bar = baseline.alpha / 2 if baseline.under is not None else baseline.alpha
        print(f"dfstream baseline: {prefix}the conformal bound needs {_blocks_needed(baseline)} effective samples "
              f"at alpha {per_bar:g}; with {baseline.n_eff} the bar is the bounded fallback (see docs/baselines.md)")
    print(f"dfstream baseline: wrote {path}")


def _blocks_needed(baseline: Any) -> int:
    """Fewest effective samples n with ceil((n + 1)(1 - alpha)) <= n: the conformal bound is finite from there."""
    from stream.live.verdicts.baseline import conformal_rank

    n = 1
    tail = baseline.alpha / 2 if baseline.under is not None else baseline.alpha  # split between two bars
    while conformal_rank(n, tail) > n:
        n += 1
    return n
