"""How many threads each stage's thread pool gets, so that together they fill the machine.

A named policy, `plan_threads(pipeline, cores, share)`. With the serial pipeline the detector and the engines never
run at once, so each gets every core. With the overlapped pipeline they run at once, and `share` says how:

- `shared` (the default): each stage's pools get every core. Neither ONNX Runtime pool spin-waits (the sessions
  are opened with spinning off), so a stage that idles leaves its cores to the other: when scoring waits for the
  next detection, MTCNN runs on both cores, and the other way round. Trade-off: when both stages have work they
  run twice as many threads as cores and the OS time-slices them (a little switching, no idle core); the scale
  grows with the machine by itself.
- `split`: the cores divided by `detect_share` (each stage at least one thread), the plan before issue 25. No
  oversubscription, but a stage's core idles whenever that stage does.

The detection stage itself may run on several threads (`detect_workers`, `pipelines.DetectWorkers`): with `shared`,
one per core, each detecting a share of the pass's streams through the same MTCNN sessions. Why: MTCNN's cascade
is many small steps (a net call, a resize, NMS, the boxes' Python), so one detection keeps about one core busy even
with every core in its pools; a second worker fills the idle one, and each frame waits for a share of the pass
instead of the whole of it. Trade-off: smaller batches (a little more of the cascade's per-call cost) and, when
every stage has work, more runnable threads than cores (no spinning: switching only). `split` and `serial` keep
the whole pass in one batch on one thread, the plan before it.

With one core nothing can overlap and both get one thread. torch has one intra-op pool for the process, so when the
detector and an engine both run on torch they share it (in `split`, sized to the detector's share).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

DETECT_SHARE = 0.5  # split: MTCNN and MesoNet take similar time per pass at 720p; a heavy engine wants more


@dataclass(frozen=True, slots=True)
class ThreadPlan:
    detector: int  # ONNX Runtime intra-op threads of the MTCNN nets (faces.backend onnx)
    engines: int  # ONNX Runtime intra-op threads of each engine's session
    torch: int  # torch's intra-op pool (MTCNN on torch, torch engines)
    detect_workers: int = 1  # threads detecting one pass's streams at once (the overlapped pipeline)


def cores_here() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    return max(1, len(os.sched_getaffinity(0)))


def plan_threads(pipeline: str, cores: int | None = None, share: str = "shared",
                 detect_share: float = DETECT_SHARE) -> ThreadPlan:
    """The thread plan for `pipeline` ("serial" or "overlapped") on `cores` (default: this process's CPUs), the
    overlapped stages' cores `shared` or `split`."""
    cores = max(1, cores or cores_here())
    if share not in ("shared", "split"):
        raise ValueError(f"unknown thread plan {share!r}; choose shared or split")
    if pipeline == "serial" or cores == 1:
        return ThreadPlan(cores, cores, cores)
    if share == "shared":
        return ThreadPlan(cores, cores, cores, detect_workers=cores)
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
