"""Voice engines on the shared speech: AUC and EER per engine and per generator, and the time of one window.

Run: .venv/bin/python benchmarks/voices.py [--engines aasist aasist-l] [--speech ../shared/data/speech]
     [--weights-dir ../shared/weights/aasist] [--repeats 7] [--out DIR]

What is measured:
- Quality: `dfstream eval --modality voice` (the product's own path: PyAV decode to 16 kHz, 4 s windows every 2 s,
  the silero speech gate, mean over a file's judged windows) on a linked copy of the shared speech in which each
  fake sits in a folder named after its generator, so the report breaks the figures down per generator. The
  generator is read from the shared file names here (the dataset itself takes labels from folders only):
  `wavefake_*_gen` -> wavefake (WaveFake's generated LJSpeech), `espnet_<corpus>_<model>_<vocoder>_*` ->
  <corpus>-<model>-<vocoder> (GL: Griffin-Lim, WNV: WaveNet vocoder).
- Speed: `engine.predict` on one window (batch 1, speech samples), after one warm-up call; the median and best of
  `--repeats` calls (time.perf_counter). The machine may be shared: the best call is the figure least inflated by
  other processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
ESPNET = re.compile(r"^espnet_(lj|libritts)_(.+?)[._-]v\d+[_-](GL|WNV)")


def generator(name: str) -> str:
    if name.startswith("wavefake_"):
        return "wavefake"
    m = ESPNET.match(name)
    return f"{m.group(1)}-{m.group(2)}-{m.group(3).lower()}" if m else "other"


def linked_dataset(speech: Path, root: Path) -> Path:
    """real/ and fake/<generator>/ under `root`, each file a symlink into `speech` (nothing copied)."""
    for path in sorted((speech / "real").glob("*.wav")):
        (root / "real").mkdir(parents=True, exist_ok=True)
        os.symlink(path, root / "real" / path.name)
    for path in sorted((speech / "fake").glob("*.wav")):
        folder = root / "fake" / generator(path.name)
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(path, folder / path.name)
    return root


def time_window(name: str, weights_dir: Path, speech: Path, repeats: int) -> dict:
    import numpy as np

    from engines.voice_base import fit_window
    from engines.voices import build_voice_engine
    from stream.live.voices import decode_audio

    engine = build_voice_engine(name, weights_dir=weights_dir, allow_download=False)
    clip = decode_audio(sorted((speech / "real").glob("*.wav"))[0]).samples
    window = fit_window(clip, engine.spec)[None]
    engine.predict(window)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.predict(window)
        times.append(time.perf_counter() - start)
    import torch

    return {"median_ms": 1000 * statistics.median(times), "best_ms": 1000 * min(times), "repeats": repeats,
            "threads": torch.get_num_threads(), "window_s": engine.spec.seconds,
            "parameters": sum(p.numel() for p in engine.module.parameters()), "input": list(np.shape(window))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", nargs="+", default=["aasist", "aasist-l"])
    p.add_argument("--speech", type=Path, default=SHARED / "data" / "speech")
    p.add_argument("--weights-dir", type=Path, default=SHARED / "weights" / "aasist")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=None, help="where each engine's eval report goes (default: a temp dir)")
    args = p.parse_args()

    from stream.cli import main as dfstream

    out = args.out or Path(tempfile.mkdtemp(prefix="voices-bench-"))
    data = linked_dataset(args.speech, Path(tempfile.mkdtemp(prefix="voices-data-")))
    summary = {}
    for name in args.engines:
        report = out / name
        code = dfstream(["eval", str(data), "--modality", "voice", "--model", name, "--weights-dir",
                         str(args.weights_dir), "--offline", "--device", "cpu", "--out", str(report)])
        metrics = json.loads((report / "metrics.json").read_text())
        summary[name] = {"exit": code, "file": metrics["file"], "window": metrics["window"],
                         "generators": {g: {k: m[k] for k in ("n", "fake", "auc", "eer")}
                                        for g, m in metrics["generators"].items()},
                         "unscored": metrics["unscored"], "speed": time_window(name, args.weights_dir, args.speech,
                                                                              args.repeats)}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
