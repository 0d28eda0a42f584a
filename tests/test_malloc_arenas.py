"""`serve` caps glibc's malloc arenas (stream/live/server/malloc.py): the soak found RSS climbing from arena
fragmentation with glibc's default. Checked in a fresh interpreter through glibc's own report (malloc_info):
threads allocating at once get at most the capped number of arenas, where without the cap they get more."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
THREADS = 8

PROBE = f"""
import ctypes, os, sys, tempfile, threading
sys.path.insert(0, {str(REPO)!r})
from stream.live.server.malloc import cap_arenas
capped = cap_arenas() if sys.argv[1] == "cap" else None
barrier = threading.Barrier({THREADS})
def work():
    barrier.wait()
    for _ in range(2000):
        blocks = [ctypes.create_string_buffer(4096) for _ in range(8)]
        del blocks
threads = [threading.Thread(target=work) for _ in range({THREADS})]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
f = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(f))
libc.fclose(ctypes.c_void_p(f))
print(capped, open(path).read().count("<heap nr="))
os.unlink(path)
"""


def heaps(mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
                         env=env, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_serve_caps_the_arenas_that_threads_allocating_at_once_get():
    capped, capped_heaps = heaps("cap")
    assert capped == "True"
    assert 1 <= capped_heaps <= 2
    _, default_heaps = heaps("default")
    assert default_heaps > 2  # glibc's default gives these threads more: the cap is what keeps them to two


def test_an_operators_malloc_arena_max_is_left_alone(monkeypatch):
    from stream.live.server.malloc import cap_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cap_arenas() is False


TRIM_PROBE = f"""
import ctypes, sys
sys.path.insert(0, {str(REPO)!r})
from stream.live.server.malloc import trim
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
blocks = [libc.malloc(64 << 10) for _ in range(4000)]  # 250 MiB in blocks under the mmap threshold
for b in blocks:
    ctypes.memset(b, 1, 64 << 10)
for i, b in enumerate(blocks):
    if i % 100:
        libc.free(b)  # freed between live ones: glibc cannot give these back from the heap's top
before = rss_mib()
trimmed = trim() if sys.argv[1] == "trim" else None
print(trimmed, round(before - rss_mib()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_trim_hands_free_pages_between_live_blocks_back():
    def run(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", TRIM_PROBE, mode], capture_output=True, text=True,
                             timeout=120, check=True).stdout.split()
        return out[0], int(out[1])

    trimmed, freed = run("trim")
    assert trimmed == "True" and freed >= 150, freed  # most of the ~245 MiB freed between live blocks
    _, kept = run("none")
    assert kept < 50  # without the trim, the process keeps them
