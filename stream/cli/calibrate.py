"""`dfstream calibrate`: fit a model's score calibration (or an ensemble's stacking) on a labelled dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stream.cli.common import EXIT_OK, add_backend, add_model_args, face_detector, prepared
from stream.live.assembly import ENSEMBLE_PREFIX, expand_models


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("calibrate", help="fit a monotone map from a model's raw score to calibrated p(fake) "
                                                f"(or, with --model {ENSEMBLE_PREFIX}a,b,..., a stacked ensemble)")
    p.add_argument("dataset", type=Path, metavar="DATASET",
                   help="folder with real/ and fake/[METHOD/] media, or the FaceForensics++ layout")
    add_model_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the calibration JSON to write")
    p.add_argument("--method", choices=["platt", "isotonic"], default="platt",
                   help="platt: a sigmoid on the logit (2 numbers, robust on small sets; default); isotonic: any "
                        "monotone shape (needs more data)")
    p.add_argument("--fps", type=float, default=None, help="frames analysed per second of video (default 5)")
    p.add_argument("--faces", choices=["mtcnn", "none"], default="mtcnn",
                   help="'none' scores the whole frame as one face (for datasets of face crops)")
    add_backend(p)
    p.add_argument("--cache-dir", dest="crop_cache_dir", type=Path, default=None, metavar="DIR",
                   help="face-crop cache shared with eval")
    p.set_defaults(run=run, precision="fp32", calibrate=None, cache_dir=None)
    return p


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from engines.calibration import write_file
    from engines.registry import DEFAULT_MODEL
    from stream.jobs.calibrate import Faces, ece, fit_ensemble, fit_map
    from stream.jobs.datasets import discover
    from stream.jobs.crop_cache import CropCache, default_crop_cache_dir
    from stream.jobs.evaluate import RichProgress, evaluate
    from stream.jobs.scan import Scanner, ScanOptions

    names, ensemble_name = expand_models(args.models or [DEFAULT_MODEL])
    if ensemble_name is None and len(names) != 1:
        raise ValueError(f"calibrate one model at a time, or name an ensemble: --model {ENSEMBLE_PREFIX}"
                         f"{','.join(names)}")
    dataset = discover(args.dataset)  # a bad dataset fails before any model loads
    engines = [prepared(n, args, args.weights) for n in names]
    scanner = Scanner(engines, [0.5], ScanOptions(fps=args.fps, faces=args.faces), face_detector(args),
                      calibrated=False)
    cache = CropCache(args.crop_cache_dir or default_crop_cache_dir(), scanner)
    with RichProgress(len(dataset.items)) as progress:
        report = evaluate(dataset, scanner, cache, progress)
    faces = Faces.of(report, names)
    fitted_on = {"dataset": str(dataset.root), "fps": scanner.fps, "faces_mode": args.faces}
    shas = {e.name: e.weights_sha256 for e in engines}
    if ensemble_name is not None:
        item = fit_ensemble(ensemble_name, faces, shas, args.method, fitted_on)
        calibrated = {m.model: m.apply(np.nan_to_num(faces.scores[m.model], nan=0.5)) for m in item.members}

        def stacked(i: int) -> float:
            present = {n: float(p[i]) for n, p in calibrated.items() if not np.isnan(faces.scores[n][i])}
            return np.nan if not present else item.fuse(present)

        fused = np.array([stacked(i) for i in range(len(faces.labels))], dtype=np.float64)
        raw = np.nanmean(np.stack(list(faces.scores.values()), axis=1), axis=1)
        print(f"dfstream calibrate: {ensemble_name}: stacking weights "
              + ", ".join(f"{n} {c:+.3f}" for n, c in item.influence.items()) + " per SD of each logit")
    else:
        item = fit_map(faces.scores[names[0]], faces.labels, args.method, names[0], shas[names[0]], fitted_on)
        raw = faces.scores[names[0]]
        keep = ~np.isnan(raw)
        fused = np.full_like(raw, np.nan)
        fused[keep] = item.apply(raw[keep])
    keep = ~np.isnan(fused) & ~np.isnan(raw)
    print(f"dfstream calibrate: {len(faces.labels)} face-frames; expected calibration error on them "
          f"{ece(raw[keep], faces.labels[keep]):.3f} raw -> {ece(fused[keep], faces.labels[keep]):.3f} calibrated "
          "(in-sample: measure it on other data with dfstream eval --calibration)")
    print(f"dfstream calibrate: wrote {write_file(item, args.out)}")
    return EXIT_OK
