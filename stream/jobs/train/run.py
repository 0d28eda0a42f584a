"""One training run: check the data and the output folder, split by video, dispatch to the kind, and write
`metrics.json` (settings, data counts, per-epoch history, best validation metrics, weight files)."""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from stream.jobs.datasets import FAKE, REAL, Dataset
from stream.jobs.train import checkpoint
from stream.jobs.train.config import TrainConfig
from stream.jobs.train.data import SBI_HINT, CropSpec, Samples, Sbi, collect, load_dataset, with_pseudo_fakes
from stream.jobs.train.progress import say
from stream.jobs.train.seed import SBI_VAL
from stream.jobs.train.splits import check_both_classes, split_groups, val_mask
from stream.jobs.train.tracking import EmissionsMeter, Tracker, log_emissions, open_tracker

METRICS_JSON = "metrics.json"
FEATURES_NPZ = "features.npz"
IMBALANCE_WARN = 4.0  # warn when one class outnumbers the other by more than this in training
CARDS = {"logreg": "000", "videomae": "001", "lstm": "002", "xception": "003"}


@dataclass
class Run:
    cfg: TrainConfig
    dataset: Dataset
    val_groups: set[str]
    device: str
    tracker: Tracker

    @property
    def out(self) -> Path:
        return self.cfg.out

    def cache_dir(self) -> Path | None:
        from stream.jobs.crop_cache import default_crop_cache_dir

        if self.cfg.no_cache:
            return None
        return self.cfg.cache_dir or default_crop_cache_dir()  # eval's cache: crops extracted there are reused

    def spec(self, margin: float, length: int = 1, size: int | None = None) -> CropSpec:
        """The crops this run trains on: the engine's margin, the run's size (or the model's), fps and sampling."""
        side = size or self.cfg.size
        assert side is not None, "every kind has a default size"
        return CropSpec(side, margin, self.cfg.fps, self.cfg.faces, length, self.cfg.per_video)

    def collect(self, spec: CropSpec, sbi: Sbi, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> Samples:
        return collect(self.dataset, spec, seed=self.cfg.seed, sbi=sbi, device=self.device,
                       cache_dir=self.cache_dir(), transform=transform, progress=self.cfg.progress)

    def split(self, samples: Samples, online_sbi: bool = False) -> tuple[Samples, Samples]:
        """Train and validation samples by video; with online SBI the validation pseudo-fakes are made once here
        (fixed, so epochs are compared on the same set) and training's are made by the loader every epoch."""
        mask = val_mask(samples.groups, self.val_groups)
        train, val = samples.take(np.flatnonzero(~mask)), samples.take(np.flatnonzero(mask))
        if online_sbi:
            val = with_pseudo_fakes(val, self.cfg.seed, SBI_VAL)
        hint = "" if self.cfg.sbi else SBI_HINT
        real = int(np.sum(train.labels == REAL))
        fake = int(np.sum(train.labels == FAKE)) + (real if online_sbi else 0)  # one pseudo-fake per real
        check_both_classes(real, fake, "training", hint)
        check_both_classes(int(np.sum(val.labels == REAL)), int(np.sum(val.labels == FAKE)), "validation", hint)
        if max(real, fake) > IMBALANCE_WARN * min(real, fake):
            say(f"warning: unbalanced training data ({real} real, {fake} fake samples); accuracy and the 0.5 "
                "threshold will favour the larger class")
        return train, val

    @cached_property
    def data_digest(self) -> str:
        """What identifies the data cheaply: a hash of each file's path, size and modification time."""
        files = [(str(i.path), (st := i.path.stat()).st_size, st.st_mtime_ns) for i in self.dataset.items]
        return hashlib.sha256(json.dumps(files).encode()).hexdigest()

    def fixed(self, **extra: Any) -> dict[str, Any]:
        """Settings a resumed run must share with the checkpoint's run (data, model, seed)."""
        c = self.cfg
        return {"kind": c.kind, "dataset": str(self.dataset.root), "data": self.data_digest, "seed": c.seed,
                "sbi": c.sbi, "size": c.size, "fps": c.fps, "per_video": c.per_video, "faces": c.faces,
                "val_fraction": c.val_fraction, **extra}

    def cached_samples(self, key: dict[str, Any], build: Callable[[], Samples]) -> Samples:
        """Feature samples from `out/features.npz` when resuming with the same `key`, else built and saved there:
        a resumed logreg or frozen-backbone lstm run skips the backbone pass."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        path = self.out / FEATURES_NPZ
        if self.cfg.resume and path.is_file():
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == digest:
                    say(f"reusing features from {path}")
                    return Samples(z["x"], z["labels"], z["groups"].astype(object), z["methods"].astype(object))
            say(f"{path} was computed with other settings; recomputing")
        samples = build()
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, key=np.array(digest), x=samples.x, labels=samples.labels,
                 groups=samples.groups.astype(str), methods=samples.methods.astype(str))
        tmp.replace(path)
        return samples


def _device(cfg: TrainConfig) -> str:
    import torch

    return cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job end to end; returns what metrics.json holds."""
    cfg = cfg.resolved()
    started = time.perf_counter()
    emissions = EmissionsMeter(cfg.track_emissions, cfg.out, cfg.emissions_country, f"dfstream-train-{cfg.kind}")
    dataset = load_dataset(cfg.dataset, cfg.sbi)
    checkpoint.refuse_overwrite(cfg.out, cfg.resume)
    # Fail on too few videos before any decoding.
    val_groups = split_groups([i.group for i in dataset.items], [i.label for i in dataset.items],
                              cfg.val_fraction, cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"stream.jobs.train.{cfg.kind}")
    with open_tracker(cfg.mlflow, cfg.mlflow_experiment, f"{cfg.kind}-{dataset.root.name}", say) as tracker, \
            emissions:
        tracker.params(cfg.public())
        run = Run(cfg, dataset, val_groups, _device(cfg), tracker)
        result = module.train(run)
        report = {"kind": cfg.kind, "card": CARDS[cfg.kind], "dataset": str(dataset.root), "layout": dataset.layout,
                  "config": cfg.public(), **result, "seconds": round(time.perf_counter() - started, 3)}
        report["weights"] = [str(p) for p in result.get("weights", [])]
        if cfg.track_emissions:
            report["emissions"] = emissions.stop()  # this invocation's: a resumed run measures its own part
        if tracker.info():
            report["mlflow"] = tracker.info()
        (cfg.out / METRICS_JSON).write_text(json.dumps(report, indent=2, default=_json) + "\n")
        for path in [*result.get("weights", []), cfg.out / METRICS_JSON]:
            tracker.artifact(Path(path))
        if result.get("val"):
            tracker.metrics({f"best.{k}": v for k, v in result["val"].items()})
        log_emissions(tracker, report.get("emissions"))
    return report


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
