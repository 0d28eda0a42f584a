"""`dfstream train`: train an engine's weights on a labelled dataset. The parser is built on every `dfstream`
call, so this module imports nothing heavy; the training itself is imported when the command runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from typing import Any

from stream.cli.common import EXIT_OK
from stream.jobs.train import KINDS
from stream.jobs.train.config import DEFAULT_VAL_FRACTION, DEFAULT_VIDEOMAE_INIT, TrainConfig
from stream.jobs.train.tracking import add_emissions_arguments


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train an engine's weights on a labelled dataset "
                                            "(logreg, lstm, videomae, xception)")
    add_arguments(p)
    p.set_defaults(run=run)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=KINDS, metavar="KIND",
                   help="logreg (card 000), lstm (card 002), videomae (card 001) or xception (card 003)")
    p.add_argument("dataset", type=Path, metavar="DATASET",
                   help="folder with real/ and fake/[METHOD/] media, or the FaceForensics++ layout")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where weights, checkpoint and "
                   "metrics.json are written")
    p.add_argument("--sbi", action="store_true",
                   help="add self-blended pseudo-fakes made from the real faces (a dataset of reals only works)")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, initialisation, shuffles and SBI")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint (or reuse the features) in --out")
    data = p.add_argument_group("data")
    data.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                      help="share of each class's videos held out for validation (default 0.2)")
    data.add_argument("--size", type=int, default=None, help="crop size (default: the engine's, 299)")
    data.add_argument("--fps", type=float, default=None,
                      help="frames decoded per second (default 1 for logreg/xception, every frame for lstm/videomae)")
    data.add_argument("--per-video", type=int, default=None,
                      help="face-frames (logreg 10, xception 10) or clips (lstm, videomae: 4) kept per video")
    data.add_argument("--faces", choices=["mtcnn", "none"], default="mtcnn",
                      help="'none' uses each whole image as the face (datasets of face crops)")
    data.add_argument("--cache-dir", type=Path, default=None,
                      help="face-crop cache, shared with eval (default: $DFSTREAM_CACHE/crops or "
                           "~/.cache/dfstream/crops)")
    data.add_argument("--no-cache", action="store_true", help="neither read nor write the face-crop cache")
    opt = p.add_argument_group("optimisation (lstm, videomae, xception)")
    opt.add_argument("--epochs", type=int, default=None)
    opt.add_argument("--batch-size", type=int, default=None)
    opt.add_argument("--lr", type=float, default=None)
    opt.add_argument("--select", choices=["accuracy", "auc"], default=None,
                     help="validation metric that picks the best epoch (xception: accuracy, as card 003)")
    opt.add_argument("--patience", type=int, default=None, help="stop after this many epochs without improvement")
    opt.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    opt.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    bb = p.add_argument_group("backbone (logreg, lstm)")
    bb.add_argument("--backbone-weights", type=Path, default=None, metavar="FILE",
                    help="Xception weights (Keras .h5/.weights.h5/.keras, or a KerasXception state dict) instead "
                         "of the registry's ImageNet file")
    bb.add_argument("--weights-dir", type=Path, default=None, help="where the ImageNet backbone is looked up")
    bb.add_argument("--offline", action="store_true", help="never download the backbone")
    kinds = p.add_argument_group("per kind")
    kinds.add_argument("--grid", choices=["full", "small"], default="full",
                       help="logreg: card 000's grid (full) or a two-point one for smoke runs")
    kinds.add_argument("--jobs", type=int, default=1, help="logreg: GridSearchCV parallel jobs")
    kinds.add_argument("--steps", type=int, default=30, help="lstm: face-frames per sequence (card 002: 30)")
    kinds.add_argument("--finetune", action="store_true", help="lstm: train the Xception too (default frozen)")
    kinds.add_argument("--init", default=DEFAULT_VIDEOMAE_INIT, metavar="FOLDER_OR_HUB_ID",
                       help="videomae: checkpoint to fine-tune")
    kinds.add_argument("--freeze-epochs", type=int, default=None,
                       help="videomae: epochs with the backbone frozen before it is unfrozen (default 1)")
    kinds.add_argument("--lr-decay", type=float, default=None, help="videomae: lr factor per epoch (default 0.9)")
    track = p.add_argument_group("tracking")
    track.add_argument("--mlflow", action="store_true", help="log to MLflow (needs the 'mlflow' extra), to the "
                       "store MLFLOW_TRACKING_URI names (e.g. file:./mlruns)")
    track.add_argument("--mlflow-experiment", default="dfstream-train")
    add_emissions_arguments(track)
    track.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def run(args: argparse.Namespace) -> int:
    from stream.jobs.train.run import METRICS_JSON, train

    report = train(config_from_args(args))
    summary = {"weights": report["weights"], "metrics": str(Path(report["config"]["out"]) / METRICS_JSON),
               **{k: report[k] for k in ("best", "val") if report.get(k)}}
    json.dump(summary, sys.stdout, default=str)
    sys.stdout.write("\n")
    return EXIT_OK
