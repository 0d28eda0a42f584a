"""Reading torch checkpoints into the architectures' modules, shared by every architecture that loads `.pth` or
state dicts (Xception 140k, the ICPR EfficientNets, GenD): safe reading, and one error naming every mismatch."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from engines.base import WeightsFormatError

WRAPPER_KEYS = ("state_dict", "model_state_dict")  # training-script checkpoints nest the weights under these
DATAPARALLEL_PREFIX = "module."
MAX_LISTED_KEYS = 5  # how many offending keys an error message names


def _listed(items: list[str]) -> str:
    more = f" (+{len(items) - MAX_LISTED_KEYS} more)" if len(items) > MAX_LISTED_KEYS else ""
    return ", ".join(items[:MAX_LISTED_KEYS]) + more


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `.pth` without unpickling arbitrary objects (weights_only), unwrapping the usual containers.

    Accepts a bare state dict or one nested under `state_dict` / `model_state_dict`, and strips DataParallel's
    `module.` prefix. Anything torch cannot read as a checkpoint becomes a WeightsFormatError.
    """
    path = Path(path)
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, BadZipFile... for non-checkpoints
        raise WeightsFormatError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsFormatError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return {k.removeprefix(DATAPARALLEL_PREFIX): v for k, v in obj.items()}


def load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """strict=True load, but every key/shape mismatch is reported up front as one WeightsFormatError."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label} ({len(keys)}): {_listed(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
        if keys
    ]
    if problems:
        raise WeightsFormatError(
            f"{source}: does not match {type(module).__name__} ({len(expected)} tensors): " + "; ".join(problems)
        )
    module.load_state_dict(state, strict=True)
