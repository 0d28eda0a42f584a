"""benchmarks/gpu_check.sh on a machine without a GPU: the wrapper says so and stops; the Python part's dry run
goes through every step on the CPU (engine parity, the live scheduler on synthetic frames) with PyAV made absent,
as on a GPU machine that holds no PyAV."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run the real check")


def test_wrapper_says_the_gpu_is_absent_and_stops():
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert out.returncode == 3, out.stdout + out.stderr
    assert "GPU: absent" in out.stdout and "no CUDA device" in out.stdout


@pytest.mark.slow  # 11 s (pytest --fast --durations=30, 2026-12-07)
def test_dry_run_goes_through_every_step_without_pyav():
    argv = ["gpu_check.py", "--dry-run", "--streams", "1", "--seconds", "1.5", "--warmup", "1.5"]
    code = ("import runpy, sys; sys.modules['av'] = None; "  # PyAV cannot import, as on the GPU machine
            f"sys.argv = {argv!r}; runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "GPU: absent" in text and "path: cpu dry run" in text
    assert "av               absent" in text
    assert "meso4-df" in text and "PASS" in text  # the engine step ran and checked parity
    assert "synthetic frames" in text  # frames made in memory, not decoded
    rows = [line.split() for line in text.splitlines() if line.strip().startswith("1 ")]
    assert rows and float(rows[0][2]) > 0, text  # the live run analysed frames
