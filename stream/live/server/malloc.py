"""glibc's malloc arenas, capped for a long-running `serve`.

Why: glibc hands threads that allocate at the same time arenas of their own, up to 8 per core, and memory freed
into one arena is reused only by the threads that land on it. `serve` allocates from many threads at once (a
decoder per camera, FFmpeg's decoding threads, the inference pools, the evidence and channel threads), mostly
frame-sized buffers, so the arenas fragment and RSS climbs for hours while Python holds nothing more: the soak
(`benchmarks/soak.py`, figures in docs/operations/health.md) saw RSS still rising after warm-up with glibc's
default and flat with the cap, Python's own allocations flat in both (tracemalloc).

Trade-off (`SERVE_MALLOC_ARENAS`): fewer arenas means threads that allocate at the same moment may wait for one;
serve's threads spend their time in FFmpeg, torch or ONNX Runtime, not in malloc, and 2 arenas still let two
allocate at once. More arenas would give memory back to fragmentation; 1 would serialise every allocation.

An operator's `MALLOC_ARENA_MAX` wins (glibc read it at start, and it is left alone); on another C library
(musl, macOS) this does nothing. Called first thing by `dfstream serve`, before its threads exist.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

SERVE_MALLOC_ARENAS = 2  # see the module docstring for the trade-off
M_ARENA_MAX = -8  # glibc's malloc.h


def cap_arenas(arenas: int = SERVE_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas` for the rest of this process; False where nothing was changed (the
    environment already says, or this is not glibc)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_ARENA_MAX, arenas) == 1
    if ok:
        log.debug("malloc arenas capped at %d", arenas)
    return ok
