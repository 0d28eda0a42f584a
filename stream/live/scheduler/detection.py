"""Two named policies of the detection stage: which picks of a pass run a full-frame detection (`stagger`), and how
a pass's picks are shared among detection workers (`split`). Pure: indices and counts in, indices out.

Why: streams added together stay in phase. With `detect_every: 3` every stream's full detection falls in the same
pass, so one pass in three carries every stream's MTCNN pyramid and the two between carry only cheap re-locations.
A frame's latency is its pass's length, so that one long pass is the p95; spreading the full detections evenly
over the passes makes every pass about a third as long as the long one, for the same work.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# A full-frame detection of a 720p frame at 640 px costs about this many face re-locations (96 px crops) of one
# detection worker's time (issue 25's figures: ~30 ms against ~8-11 ms; benchmarks/detect_stage.py on a loaded
# machine: 3 to 4). Only the split uses it, to give each worker about the same work; a wrong ratio makes one worker
# finish early, never changes a box.
FULL_TO_RELOCATE = 3.0


@dataclass(frozen=True, slots=True)
class Planned:
    """One pick's detection this pass: a full-frame MTCNN, or its `faces` tracked faces re-located on crops."""

    full: bool
    faces: int

    @property
    def cost(self) -> float:
        """Its work, in face re-locations (`FULL_TO_RELOCATE`)."""
        return FULL_TO_RELOCATE if self.full else float(self.faces)


def stagger(waits: Sequence[int], every: Sequence[int]) -> list[bool]:
    """Which picks run a full detection this pass. `waits[i]`: passes until pick i's full detection falls due by
    its interval (0: now; a lost or untracked stream is 0); `every[i]`: its interval (`detect_every`).

    Every pick due now runs one. While the pass carries fewer than its share, `ceil(sum(1 / every))`, and some
    later pass is crowded (more picks due in it than that share), a pick of the most crowded pass (the nearest
    among equals) runs its full detection now instead: the one with the shortest interval (the cheapest to move:
    a camera before a shared screen, whose larger picture costs more), the first among equals. Its interval is
    shortened once, and from then on it is in a less crowded phase. Trade-off: each move costs one extra full
    detection, once; a full detection is never put off, so a new face is found as soon as without the stagger
    (within `detect_every` analysed frames). A lone stream, or streams already spread out, are never moved."""
    full = [w <= 0 for w in waits]
    share = math.ceil(sum(1.0 / max(1, e) for e in every) - 1e-9)
    crowd = Counter(w for w in waits if w > 0)
    now = sum(full)
    while now < share:
        crowded = [k for k, n in crowd.items() if n > share]
        if not crowded:
            break
        k = max(crowded, key=lambda k: (crowd[k], -k))
        i = min((i for i, w in enumerate(waits) if w == k and not full[i]), key=lambda i: every[i])
        full[i] = True
        crowd[k] -= 1
        now += 1
    return full


def split(plan: Sequence[Planned], workers: int) -> list[list[int]]:
    """The pass's pick indices in at most `workers` groups of about equal cost (the costliest pick to the least
    loaded group first), each group in pick order; no group is empty. One worker: one group, the whole pass."""
    groups: list[list[int]] = [[] for _ in range(max(1, min(workers, len(plan))))]
    loads = [0.0] * len(groups)
    for i in sorted(range(len(plan)), key=lambda i: -plan[i].cost):
        g = loads.index(min(loads))
        groups[g].append(i)
        loads[g] += plan[i].cost
    return [sorted(g) for g in groups if g]
