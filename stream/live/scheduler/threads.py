"""How many threads each stage's thread pool gets, so that together they fill the machine without oversubscription.

A named policy, `plan_threads`: with the serial pipeline the detector and the engines never run at once, so each
gets every core. With the overlapped pipeline they do run at once, so the cores are split between them by
`detect_share` (each stage at least one thread). Trade-off: a split stage is slower on its own than with every
core, so overlapping pays only when both stages have work to hide under each other; with one core nothing can
overlap and both get one thread. torch has one intra-op pool for the process, so when the detector and an engine
both run on torch they share it (sized to the detector's share, the stage that runs torch when overlapped).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

DETECT_SHARE = 0.5  # MTCNN and MesoNet take similar time per pass at 720p; a heavy engine wants more for itself


@dataclass(frozen=True, slots=True)
class ThreadPlan:
    detector: int  # ONNX Runtime intra-op threads of the MTCNN nets (faces.backend onnx)
    engines: int  # ONNX Runtime intra-op threads of each engine's session
    torch: int  # torch's intra-op pool (MTCNN on torch, torch engines)


def plan_threads(pipeline: str, cores: int | None = None, detect_share: float = DETECT_SHARE) -> ThreadPlan:
    """The thread plan for `pipeline` ("serial" or "overlapped") on `cores` (default: this process's CPUs)."""
    cores = max(1, cores or len(os.sched_getaffinity(0)))
    if pipeline == "serial" or cores == 1:
        return ThreadPlan(cores, cores, cores)
    detector = min(cores - 1, max(1, math.ceil(cores * detect_share)))
    return ThreadPlan(detector, cores - detector, detector)


def apply_threads(plan: ThreadPlan, engines) -> None:
    """Size torch's pool and each ONNX Runtime engine's session by `plan` (the detector takes its own from its
    config's `threads`)."""
    import torch

    torch.set_num_threads(plan.torch)
    for engine in engines:
        if hasattr(engine, "set_threads"):
            engine.set_threads(plan.engines)
