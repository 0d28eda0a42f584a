"""Progress on stderr: a tqdm bar while faces are extracted and one per epoch with the running loss and the last
validation AUC. Bars show on a terminal only; a one-line summary per epoch is printed everywhere (logs, CI)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

PREFIX = "dfstream train"


def say(message: str) -> None:
    tqdm.write(f"{PREFIX}: {message}", file=sys.stderr)


def bar(total: int, desc: str, unit: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))


class ExtractionProgress:
    """`stream.jobs.evaluate`'s progress protocol (start, frames, done) as a tqdm bar over files."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = bar(total, "faces", "file", enabled)
        self._frames = 0

    def start(self, item: Any) -> None:
        self._bar.set_description(f"faces {item.path.name}")

    def frames(self, n: int) -> None:
        self._frames += n
        self._bar.set_postfix(frames=self._frames, refresh=False)

    def done(self, _result: Any = None) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
