"""The epoch loop shared by the torch kinds (xception, lstm, videomae).

Each epoch: seeded shuffle, train with cross-entropy on the 2-way logits, then validate (loss; accuracy, F1 and ROC
AUC per sample and per video, a video's score being the mean of its samples' p(fake) as in `eval`). The best
epoch by the kind's metric (card 003: validation accuracy) writes the deliverable weights; every epoch rewrites
`checkpoint.pt`, so `--resume` continues at the next epoch with the same optimiser state and best metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stream.jobs.datasets import FAKE, REAL
from stream.jobs.eval_report import binary_metrics
from stream.jobs.train import checkpoint
from stream.jobs.train.config import TrainConfig
from stream.jobs.train.data import Samples, blend
from stream.jobs.train.progress import bar, fmt, say
from stream.jobs.train.seed import EPOCH, FLIP, SBI_TRAIN, SHUFFLE, derived, rng
from stream.jobs.train.tracking import Tracker

THRESHOLD = 0.5
SELECT_KEYS = {"accuracy": "val_accuracy", "auc": "val_auc"}


class SampleSet(Dataset):
    """Samples as a torch Dataset. With `online_sbi`, one pseudo-fake per real sample is appended and re-blended
    every epoch; with `flip`, a horizontal flip with p = 0.5. Both are drawn from (seed, epoch, index), so the
    batches do not depend on the worker count and a resumed run sees what an uninterrupted one would have."""

    def __init__(self, samples: Samples, seed: int, online_sbi: bool = False, flip: bool = False) -> None:
        self.samples, self.seed, self.flip = samples, seed, flip
        self.reals = np.flatnonzero(samples.labels == REAL) if online_sbi else np.empty(0, dtype=int)
        if online_sbi and samples.landmarks is None:
            raise ValueError("online SBI needs landmarks")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples) + len(self.reals)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        n = len(self.samples)
        if i < n:
            x, y = self.samples.x[i], int(self.samples.labels[i])
        else:
            j = int(self.reals[i - n])
            x, y = blend(self.samples.x[j], self.samples.landmarks[j], (self.seed, SBI_TRAIN, self.epoch, j)), FAKE
        if self.flip and rng(self.seed, FLIP, self.epoch, i).random() < 0.5:
            x = x[..., ::-1, :]  # the width axis of (S, S, 3) and (T, S, S, 3) alike
        return np.ascontiguousarray(x), y

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([self.samples.labels, np.full(len(self.reals), FAKE)])

    @property
    def groups(self) -> np.ndarray:
        return np.concatenate([self.samples.groups, self.samples.groups[self.reals]])

    def counts(self) -> dict[str, int]:
        """Samples per epoch, the loader's pseudo-fakes included."""
        counts = self.samples.counts()
        made = len(self.reals)
        counts.update(samples=len(self), fake=counts["fake"] + made, pseudo_fakes=counts["pseudo_fakes"] + made)
        return counts


@dataclass
class Task:
    """What one kind hands the loop."""

    model: nn.Module  # what the checkpoint saves and the optimiser trains
    optimizer: torch.optim.Optimizer
    train: SampleSet
    val: SampleSet
    prepare: Callable[[torch.Tensor], torch.Tensor]  # a collated batch -> the model's input on its device
    forward: Callable[[torch.Tensor], torch.Tensor]  # model input -> (N, 2) logits
    fake_index: int  # which logit is "fake" in the engine's format
    save_best: Callable[[], Any]  # writes the deliverable weights from the current model
    before_epoch: Callable[[int], None] = field(default=lambda epoch: None)


def _loader(data: SampleSet, cfg: TrainConfig, shuffle_seed: int | None) -> DataLoader:
    batch = cfg.batch_size or 1
    generator = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
    # BatchNorm cannot train on a final batch of one sample; drop it rather than fail.
    drop_last = shuffle_seed is not None and len(data) % batch == 1 and len(data) > 1
    return DataLoader(data, batch_size=batch, shuffle=shuffle_seed is not None, generator=generator,
                      num_workers=cfg.workers, drop_last=drop_last)


def _target(y: torch.Tensor, fake_index: int) -> torch.Tensor:
    return y if fake_index == 1 else 1 - y


@torch.no_grad()
def validate(task: Task, cfg: TrainConfig) -> dict[str, float | None]:
    task.model.eval()
    losses, scores = [], []
    for x, y in _loader(task.val, cfg, None):
        logits = task.forward(task.prepare(x)).float()
        y = y.to(logits.device)
        losses.append(F.cross_entropy(logits, _target(y, task.fake_index), reduction="sum").item())
        scores.append(torch.softmax(logits, dim=-1)[:, task.fake_index].cpu().numpy())
    labels, p = task.val.labels, np.concatenate(scores)
    frame = binary_metrics(labels, p, THRESHOLD)
    groups = task.val.groups
    names = sorted(set(groups.tolist()))
    video_p = np.array([p[groups == g].mean() for g in names])
    video_y = np.array([_video_label(labels[groups == g]) for g in names])
    keep = video_y >= 0
    two = len(set(video_y[keep].tolist())) == 2
    video = binary_metrics(video_y[keep], video_p[keep], THRESHOLD) if two else {}
    return {"val_loss": float(np.sum(losses) / len(labels)), "val_accuracy": frame["accuracy"],
            "val_f1": frame["f1"], "val_auc": frame["auc"], "val_video_accuracy": video.get("accuracy"),
            "val_video_auc": video.get("auc")}


def _video_label(labels: np.ndarray) -> int:
    """A video's label; a real video with pseudo-fakes made from it holds both, so it is scored per sample only."""
    return int(labels[0]) if np.all(labels == labels[0]) else -1


def run_epochs(task: Task, cfg: TrainConfig, out: Path, tracker: Tracker, fixed: dict[str, Any]) -> dict[str, Any]:
    """Train to `cfg.epochs` (or early stop), resuming from `out/checkpoint.pt` with `cfg.resume`."""
    key = SELECT_KEYS[cfg.select or "auc"]
    start, best, history = 0, None, []
    if cfg.resume:
        state = checkpoint.load(out, fixed)
        task.model.load_state_dict(state["model"])
        task.optimizer.load_state_dict(state["optimizer"])
        start, best, history = state["epoch"], state["best"], state["history"]
        say(f"resuming {out / checkpoint.CHECKPOINT} after epoch {start} (best {key} {fmt(best and best['value'])})")
    last_auc = history[-1]["val_auc"] if history else None
    stopped = False
    for epoch in range(start, cfg.epochs or 0):
        if cfg.patience and best is not None and epoch + 1 - best["epoch"] > cfg.patience:
            say(f"early stop: no better {key} for {cfg.patience} epochs")
            stopped = True
            break
        started = time.perf_counter()
        task.before_epoch(epoch)
        torch.manual_seed(derived(cfg.seed, EPOCH, epoch))  # dropout and any other torch draws
        task.train.epoch = epoch
        loader = _loader(task.train, cfg, derived(cfg.seed, SHUFFLE, epoch))
        task.model.train()
        total, seen = 0.0, 0
        progress = bar(len(loader), f"epoch {epoch + 1}/{cfg.epochs}", "batch", cfg.progress)
        for x, y in loader:
            logits = task.forward(task.prepare(x)).float()
            loss = F.cross_entropy(logits, _target(y.to(logits.device), task.fake_index))
            task.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            task.optimizer.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
            progress.set_postfix(loss=f"{total / seen:.4f}", val_auc=fmt(last_auc), refresh=False)
            progress.update(1)
        progress.close()
        row = {"epoch": epoch + 1, "loss": total / max(seen, 1), **validate(task, cfg),
               "lr": task.optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - started, 3)}
        last_auc = row["val_auc"]
        history.append(row)
        improved = best is None or (row[key] is not None and row[key] > best["value"])
        if improved:
            best = {"epoch": epoch + 1, "metric": key, "value": row[key]}
            task.save_best()
        checkpoint.save(out, {"fixed": fixed, "epoch": epoch + 1, "model": task.model.state_dict(),
                              "optimizer": task.optimizer.state_dict(), "best": best, "history": history})
        tracker.metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
        say(f"epoch {epoch + 1}/{cfg.epochs}: loss {fmt(row['loss'])}, val loss {fmt(row['val_loss'])}, "
            f"val accuracy {fmt(row['val_accuracy'])}, val AUC {fmt(row['val_auc'])}, "
            f"video AUC {fmt(row['val_video_auc'])}{' (best)' if improved else ''}")
    return {"history": history, "best": best, "stopped_early": stopped}


def best_row(result: dict[str, Any]) -> dict[str, Any]:
    """The history row of the best epoch: the validation metrics of the weights that were written."""
    best = result["best"]
    return next((r for r in result["history"] if best and r["epoch"] == best["epoch"]), {})
