"""Resumable training state in `--out`: `checkpoint.pt`, rewritten atomically after every epoch.

It holds plain tensors and Python values only (model and optimizer state dicts, the completed epoch count, the
best validation metric and the per-epoch history), so it is read back with `torch.load(weights_only=True)`: no
unpickling of arbitrary objects. RNG states are not stored: every draw is seeded from (seed, epoch, index).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stream.jobs.train import TrainError

CHECKPOINT = "checkpoint.pt"
FORMAT = "dfstream-train-checkpoint"
VERSION = 1


def save(out: Path, state: dict[str, Any]) -> Path:
    import torch

    path = out / CHECKPOINT
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
    os.replace(tmp, path)  # a run killed mid-write keeps the previous epoch's checkpoint
    return path


def load(out: Path, fixed: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint to resume; refuses one written by a run whose data, model or seed differ (`fixed`), since
    continuing it would silently mix two experiments. Epochs, patience and tracking may change."""
    import torch

    path = out / CHECKPOINT
    if not path.is_file():
        raise TrainError(f"--resume: no {CHECKPOINT} in {out}; run without --resume to start training there")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises several types for damaged files
        raise TrainError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        raise TrainError(f"{path}: not a {FORMAT} v{VERSION} file")
    changed = {k: (state["fixed"].get(k), v) for k, v in fixed.items() if state["fixed"].get(k) != v}
    if changed:
        diff = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise TrainError(f"{path} was trained with other settings ({diff}); resume with the same ones or use "
                         "another --out")
    return state


def refuse_overwrite(out: Path, resume: bool) -> None:
    """A fresh run never overwrites a checkpoint: the user either resumes it or picks another folder."""
    if not resume and (out / CHECKPOINT).exists():
        raise TrainError(f"{out} already holds a {CHECKPOINT}: pass --resume to continue it, or choose another --out")
