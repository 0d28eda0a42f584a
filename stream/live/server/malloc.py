"""glibc's malloc, tuned for a long-running `serve`: its arenas capped, and its free pages handed back to the
system once a minute.

Why: glibc hands threads that allocate at the same time arenas of their own, up to 8 per core, and memory freed
into one arena is reused only by the threads that land on it. `serve` allocates from many threads at once (a
decoder per camera, FFmpeg's decoding threads, the inference pools, the evidence and channel threads), mostly
frame-sized buffers, so the arenas fragment and RSS climbs for hours while Python holds nothing more: the soak
(`benchmarks/soak.py`, figures in docs/operations/health.md) saw RSS still rising after warm-up with glibc's
default and flat with the cap, Python's own allocations flat in both (tracemalloc).

Trade-off (`SERVE_MALLOC_ARENAS`): fewer arenas means threads that allocate at the same moment may wait for one;
serve's threads spend their time in FFmpeg, torch or ONNX Runtime, not in malloc, and 2 arenas still let two
allocate at once. More arenas would give memory back to fragmentation; 1 would serialise every allocation.

Even capped, an arena keeps the pages its freed blocks sit on (a frame buffer freed between two live ones): glibc
returns memory only from the top of a heap. `malloc_trim` hands every free page back (madvise), so the app calls
it every `TRIM_EVERY_S` on a worker thread (`trim_ctx`). Trade-off: one trim walks the heaps under their locks
(milliseconds here), and pages handed back are faulted in again when reused; once a minute costs nothing
measurable, where every few seconds would churn page faults and much rarer lets RSS drift between trims.

An operator's `MALLOC_ARENA_MAX` wins (glibc read it at start, and it is left alone); on another C library
(musl, macOS) all this does nothing. `cap_arenas` is called first thing by `dfstream serve`, before its threads
exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)

SERVE_MALLOC_ARENAS = 2  # see the module docstring for the trade-off
TRIM_EVERY_S = 60.0  # likewise
M_ARENA_MAX = -8  # glibc's malloc.h


def _libc() -> Any | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None


def cap_arenas(arenas: int = SERVE_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas` for the rest of this process; False where nothing was changed (the
    environment already says, or this is not glibc)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_ARENA_MAX, arenas) == 1
    if ok:
        log.debug("malloc arenas capped at %d", arenas)
    return ok


def trim() -> bool:
    """Hand glibc's free pages back to the system now; False where there is no malloc_trim (not glibc)."""
    malloc_trim = getattr(_libc(), "malloc_trim", None)
    if malloc_trim is None:
        return False
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    malloc_trim(0)
    return True


async def trim_ctx(app: Any) -> AsyncIterator[None]:
    """aiohttp cleanup context: `trim()` every TRIM_EVERY_S on a worker thread while the app runs."""
    async def every() -> None:
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, trim):
            await asyncio.sleep(TRIM_EVERY_S)

    task = asyncio.create_task(every())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
