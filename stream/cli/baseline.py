"""`dfstream baseline`: learn a camera's bar ("learn normal") from footage you vouch for as real.

    dfstream baseline MEDIA... --out FILE [--model NAME] [--alpha A] [--seconds N]

MEDIA are video files or one live address (rtsp://, /dev/video0); `--seconds` takes the first N seconds of each
(a live source needs it). The file is refused by `scan`, `eval` and `serve` (a source's `baseline:`) for other
weights. Nothing is
written when the footage cannot vouch for the camera (too short, low-quality, already called fake).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stream.cli.common import EXIT_OK, add_backend, add_calibration, add_model_args, face_detector, load_models

BASELINE_HELP = ("a camera baseline (dfstream baseline): judge with the camera's bar, learned from its own "
                 "real footage, instead of the global one")


def add_baseline(p: argparse.ArgumentParser) -> None:
    """`--baseline FILE` for scan and eval."""
    p.add_argument("--baseline", type=Path, default=None, metavar="FILE", help=BASELINE_HELP)


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
    p.set_defaults(run=run, precision="fp32", calibrate=None, cache_dir=None, faces="mtcnn")
    return p


def policy_for(args: argparse.Namespace) -> Any:
    """The verdict policy with the command line's alpha, direction and --allow-fake."""
    from stream.config.verdicts import VerdictPolicy

    if args.alpha is not None and not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must be between 0 and 1 (a false-alarm rate), got {args.alpha:g}")
    base = VerdictPolicy()
    update = {"learn_on_fake": args.allow_fake} | ({"alpha": args.alpha} if args.alpha is not None else {})
    update |= {"direction": args.direction} if getattr(args, "direction", None) else {}
    return base.model_copy(update={"baseline": base.baseline.model_copy(update=update)})


def read_for_judging(args: argparse.Namespace, modality: str = "face") -> Any:
    """The `--baseline` file of scan or eval, read before any model loads; analyses at the baseline's rate (its
    smoothing window spans that many seconds), refusing another explicit --fps. None without --baseline."""
    from stream.live.verdicts.baseline import BaselineError, read

    if args.baseline is None:
        return None
    if modality != "face":
        raise ValueError(f"--baseline judges faces (a camera's bar); --modality {modality} has no baseline yet")
    baseline = read(args.baseline)
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
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from stream.config.sources import SourceConfig
    from stream.jobs.baseline import learn
    from stream.jobs.scan import Scanner, ScanOptions
    from stream.live.verdicts.baseline import write

    policy = policy_for(args)  # a bad --alpha fails before any model loads
    if args.seconds is not None and args.seconds <= 0:
        raise ValueError(f"--seconds must be positive, got {args.seconds:g}")
    live = [m for m in args.media if SourceConfig(name="x", url=m).kind != "file"]
    if live and args.seconds is None:
        raise ValueError(f"{live[0]} is a live source: say how long to learn with --seconds N")
    missing = [m for m in args.media if m not in live and not Path(m).is_file()]
    if missing:
        raise ValueError(f"{missing[0]}: no such file")
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

        baseline = learn(scanner, args.media, policy, model=model, seconds=args.seconds, on_frames=count)
    path = write(baseline, args.out)
    print(f"dfstream baseline: {baseline.summary()}")
    if baseline.rule == "bounded":
        per_bar = baseline.alpha / 2 if baseline.under is not None else baseline.alpha
        print(f"dfstream baseline: the conformal bound needs {_blocks_needed(baseline)} effective samples at alpha "
              f"{per_bar:g}; with {baseline.n_eff} the bar is the bounded fallback (see docs/baselines.md)")
    print(f"dfstream baseline: wrote {path}")
    return EXIT_OK


def _blocks_needed(baseline: Any) -> int:
    """Fewest effective samples n with ceil((n + 1)(1 - alpha)) <= n: the conformal bound is finite from there."""
    from stream.live.verdicts.baseline import conformal_rank

    n = 1
    tail = baseline.alpha / 2 if baseline.under is not None else baseline.alpha  # split between two bars
    while conformal_rank(n, tail) > n:
        n += 1
    return n
