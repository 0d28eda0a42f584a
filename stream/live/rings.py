"""Per-track ring buffers: each face track keeps its recent crops so clip engines get windows of it.

Frame scorers take each crop as it arrives; VideoMAE wants 16-frame clips and the LSTM 30-step sequences.
A `TrackRings` keeps one preallocated ring per (crop size, margin, length) a window needs, so memory per track is
fixed and known, and emits a window every `stride` pushes once the ring is full. Expired tracks free their rings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class WindowSpec(BaseModel):
    """A window some engine consumes: `length` crops of `size`² at `margin`, emitted every `stride` crops."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(gt=0)
    margin: float = Field(ge=0.0)
    length: int = Field(gt=0)
    stride: int = Field(default=1, gt=0)

    @property
    def crop_key(self) -> tuple[int, float]:
        return (self.size, self.margin)


class CropRing:
    """A fixed-capacity ring of uint8 crops; `window()` returns them oldest first (a copy, safe to keep)."""

    def __init__(self, capacity: int, size: int) -> None:
        self.buffer = np.zeros((capacity, size, size, 3), dtype=np.uint8)
        self.pushed = 0

    @property
    def capacity(self) -> int:
        return self.buffer.shape[0]

    def push(self, crop: np.ndarray) -> None:
        self.buffer[self.pushed % self.capacity] = crop
        self.pushed += 1

    def full(self) -> bool:
        return self.pushed >= self.capacity

    def recent(self) -> np.ndarray:
        """Up to `capacity` most recent crops, oldest first, even before the ring is full (a copy)."""
        if not self.full():
            return self.buffer[: self.pushed].copy()
        return self.window()

    def window(self) -> np.ndarray:
        if not self.full():
            raise ValueError(f"ring holds {self.pushed} of {self.capacity} crops")
        start = self.pushed % self.capacity
        return np.concatenate([self.buffer[start:], self.buffer[:start]])

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes


@dataclass(frozen=True, slots=True)
class ReadyWindow:
    track: int
    spec: WindowSpec
    clip: np.ndarray  # (length, size, size, 3) uint8, oldest first


class WindowRings:
    """One track's rings, one per window spec: pushing a face-frame returns the windows it completed."""

    def __init__(self, track: int, specs: Iterable[WindowSpec]) -> None:
        self.track = track
        self._rings = {s: CropRing(s.length, s.size) for s in dict.fromkeys(specs)}

    def push(self, crops: dict[tuple[int, float], np.ndarray]) -> list[ReadyWindow]:
        """Add one face-frame (its crop per (size, margin)); return the windows that became due."""
        ready = []
        for spec, ring in self._rings.items():
            ring.push(crops[spec.crop_key])
            if ring.full() and (ring.pushed - spec.length) % spec.stride == 0:
                ready.append(ReadyWindow(self.track, spec, ring.window()))
        return ready

    @property
    def pushed(self) -> int:
        return max((r.pushed for r in self._rings.values()), default=0)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._rings.values())


class TrackRings:
    """The rings of every live track of one input, one per distinct window spec."""

    def __init__(self, specs: Iterable[WindowSpec]) -> None:
        self.specs = tuple(dict.fromkeys(specs))
        self._rings: dict[int, WindowRings] = {}

    def of(self, track: int) -> WindowRings:
        """The track's rings, allocated on its first face-frame."""
        rings = self._rings.get(track)
        if rings is None:
            rings = self._rings[track] = WindowRings(track, self.specs)
        return rings

    def push(self, track: int, crops: dict[tuple[int, float], np.ndarray]) -> list[ReadyWindow]:
        """Add one face-frame of `track` (its crop per (size, margin)); return the windows that became due."""
        return self.of(track).push(crops)

    def expire(self, tracks: Iterable[int]) -> None:
        for t in tracks:
            self._rings.pop(t, None)

    def pushed(self, track: int) -> int:
        rings = self._rings.get(track)
        return rings.pushed if rings else 0

    @property
    def tracks(self) -> list[int]:
        return list(self._rings)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._rings.values())
