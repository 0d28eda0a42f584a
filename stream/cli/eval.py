"""`dfstream eval`: measure models on a labelled dataset and write the report (metrics, per-video scores, plots)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stream.cli.baseline import add_baseline, check_for_judging, read_for_judging
from stream.cli.common import EXIT_INPUT_FAILED, EXIT_OK, add_backend, add_model_args, face_detector, \
    add_calibration, load_models, print_table
from stream.jobs.train.tracking import add_emissions_arguments
from stream.cli.voices import add_modality, modality


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="measure models on a labelled dataset (real/ + fake/, or FaceForensics++)")
    p.add_argument("dataset", type=Path, metavar="DATASET",
                   help="folder with real/ and fake/[METHOD/] media, or the FaceForensics++ layout")
    add_model_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="where metrics.json, videos.csv, roc.png and scores.png are written")
    p.add_argument("--fps", type=float, default=None,
                   help="frames analysed per second of video (default 5; every frame when a clip model runs)")
    p.add_argument("--faces", choices=["mtcnn", "none"], default="mtcnn",
                   help="'none' scores the whole frame as one face (for datasets of face crops)")
    p.add_argument("--threshold", type=float, default=None,
                   help="p(fake) at or above which an item is called fake (default: the models' own, 0.5)")
    add_backend(p)
    p.add_argument("--cache-dir", dest="crop_cache_dir", type=Path, default=None, metavar="DIR",
                   help="face-crop cache (default: $DFSTREAM_CACHE/crops or ~/.cache/dfstream/crops)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the face-crop cache")
    add_emissions_arguments(p)
    add_calibration(p)
    add_baseline(p)
    add_modality(p)
    # The engine-conversion settings, fixed for eval: fp32, the default engine cache.
    p.set_defaults(run=run, precision="fp32", calibrate=None, cache_dir=None)
    return p


def run(args: argparse.Namespace) -> int:
    from stream.jobs.datasets import discover
    from stream.jobs.crop_cache import CropCache, default_crop_cache_dir
    from stream.jobs.eval_report import write_report
    from stream.jobs.evaluate import RichProgress, evaluate
    from stream.jobs.scan import Scanner, ScanOptions

    from stream.jobs.train.tracking import EmissionsMeter

    chosen = modality(args)
    baseline = read_for_judging(args, chosen)
    if chosen == "both":
        raise ValueError("eval measures one modality at a time: --modality face or voice")
    if chosen == "voice":
        from stream.cli.voices import run_eval

        return run_eval(args)
    # Without CodeCarbon, or with an unknown country, --track-emissions fails before any work.
    emissions = EmissionsMeter(args.track_emissions, args.out, args.emissions_country, "dfstream-eval")
    dataset = discover(args.dataset)  # a bad dataset fails before any model loads
    with emissions:  # loading the models and scoring: the eval's whole cost
        engines, thresholds, ensemble = load_models(args)
        if baseline is not None:
            check_for_judging(baseline, args.baseline, engines, ensemble)
        threshold = [args.threshold] if args.threshold is not None else thresholds
        # raw scores: calibration (and an ensemble's stacking) are applied below, so both sides are measured
        scanner = Scanner(engines, threshold, ScanOptions(fps=args.fps, faces=args.faces), face_detector(args),
                          calibrated=False)
        cache = None if args.no_cache else CropCache(args.crop_cache_dir or default_crop_cache_dir(), scanner)
        with RichProgress(len(dataset.items)) as progress:
            report = evaluate(dataset, scanner, cache, progress)
    extra = {"emissions": emissions.result} if args.track_emissions else {}
    report, calibration = calibrated_report(report, engines, ensemble, args.out)
    extra.update(calibration)
    if baseline is not None:
        from stream.jobs.baseline import judge_report

        extra["baseline"] = judge_report(report, baseline, ensemble.fuse if ensemble is not None else None)
    metrics = write_report(report, args.out, extra=extra or None)
    print_metrics(metrics, args.out)
    if baseline is not None:
        print_baseline(metrics["baseline"])
    return EXIT_INPUT_FAILED if report.errors else EXIT_OK


RELIABILITY_PNG = "reliability.png"


def calibrated_report(report: Any, engines: list[Any], ensemble: Any, out: Path) -> tuple[Any, dict]:
    """With calibration maps or an ensemble: the report on calibrated scores, the expected calibration error
    before and after with a reliability diagram, and (for an ensemble) each member beside it on the same faces."""
    import numpy as np

    from engines.calibration import calibration_of
    from stream.jobs.calibrate import ece, reliability_diagram
    from stream.jobs.eval_report import binary_metrics, frame_labels_and_scores, rescored

    cals = {e.name: c for e in engines if (c := calibration_of(e)) is not None}
    if not cals and ensemble is None:
        return report, {}

    def transform(scores: dict[str, float]) -> dict[str, float]:
        return {n: float(cals[n].apply(np.array([v]))[0]) if n in cals else v for n, v in scores.items()}

    def mean(scores: dict[str, float]) -> float | None:
        return float(np.mean(list(scores.values()))) if scores else None

    after = rescored(report, ensemble.fuse if ensemble is not None else mean, transform,
                     models=[ensemble.name] if ensemble is not None else None)
    y0, s0 = frame_labels_and_scores(report)
    y1, s1 = frame_labels_and_scores(after)
    out.mkdir(parents=True, exist_ok=True)
    reliability_diagram({"raw": s0, "calibrated": s1}, y1, out / RELIABILITY_PNG,
                        f"{'+'.join(after.models)} on {report.dataset.root.name}")
    extra: dict = {"calibration": {"ece_before": ece(s0, y0), "ece_after": ece(s1, y1), "reliability": RELIABILITY_PNG,
                                   "maps": {n: {"method": c.method, "fitted_on": c.fitted_on} for n, c in cals.items()}}}
    if ensemble is not None:
        extra["calibration"]["stacking"] = {"coef": ensemble.coef, "intercept": ensemble.intercept}
        extra["members"] = {}
        for name in ensemble.member_names:
            alone = rescored(report, lambda s, n=name: s.get(n), transform, models=[name])
            y, s = frame_labels_and_scores(alone)
            extra["members"][name] = {"frame": binary_metrics(y, s, report.threshold), "ece": ece(s, y)}
    return after, extra


def print_metrics(metrics: dict, out: Path) -> None:
    """Accuracy, F1 and AUC per level (video, frame), for all fakes and for each manipulation method."""
    from rich.table import Table

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    table = Table(title=f"dfstream eval ({'+'.join(metrics['models'])}, threshold {metrics['threshold']:.2f}) "
                        f"-> {out}")
    for col in ("subset", "level", "n (real/fake)", "accuracy", "F1", "AUC"):
        table.add_column(col, justify="left" if col in ("subset", "level") else "right")
    methods = metrics["methods"] if len(metrics["methods"]) > 1 else {}  # one method is the same as "all"
    rows = [("all", metrics)] + [(f"{m} vs reals", by) for m, by in methods.items()]
    for subset, by_level in rows:
        for level in ("video", "frame"):
            if level in by_level:
                m = by_level[level]
                table.add_row(subset, level, f"{m['n']} ({m['real']}/{m['fake']})", fmt(m["accuracy"]),
                              fmt(m["f1"]), fmt(m["auc"]))
    print_table(table)


def print_baseline(b: dict) -> None:
    """Files called fake by the rolling verdict under the global bar and under the camera's."""
    from rich.table import Table

    table = Table(title=f"rolling verdicts: global bar {b['global_threshold']:g} vs camera baseline "
                        f"{b['threshold']:.3f} (alpha {b['alpha']:g}, {b['rule']})")
    for col in ("bar", "reals called fake", "fakes caught"):
        table.add_column(col, justify="left" if col == "bar" else "right")
    for bar in ("global", "camera"):
        r = b[bar]
        table.add_row(bar, f"{r['false_alarms']}/{r['real']}", f"{r['catches']}/{r['fake']}")
    print_table(table)
