"""`--model auto`: the strongest detector this machine can run, and what to say when it cannot have it.

The decision is one frozen record (`AutoChoice`) that `serve`, `scan`, `eval`, `baseline` and `models list` all
read, so the console, the status, the page and the model table say the same thing.

- **On a CUDA GPU: GenD** (`gend-clip-l14`, the best public cross-dataset detector, WACV 2026). It is the only GenD
  checkpoint whose hub revision and sha256 are pinned, and it needs a GPU to run live (9-14 s a face on a CPU,
  docs/performance.md "Model zoo speed"). If its weights cannot be had, the CPU's pick is tried next: it runs on a
  GPU too.
- **On a CPU: `effb4-dfdc`**, the ICPR 2020 EfficientNetB4 trained on DFDC. Every single ICPR network runs one
  stream live on a 2-core CPU (50-60 ms a face on ONNX Runtime fp32, against the 200 ms that 5 analysed fps
  allow), the four-network ensemble does not (130-200 ms: it fills the machine, and the governor lowers the rate).
  Of the eight single networks, plain EfficientNetB4 has the best DFDC figures (frame AUC 0.877, video AUC 0.947,
  the authors' notebook; the ensemble's video AUC is the same), and DFDC (thousands of paid actors, varied rooms,
  light and cameras, several face-swap methods) is closer to a user's own camera than FF++'s 1000 YouTube clips.
- **Neither available** (offline, the host unreachable, a download that failed or did not match its sha256):
  the strongest model whose weights are present, by `FALLBACK_RANKING`, with a warning that names the weaker model
  and the command that gets the strong one. If no MesoNet file is present either, the first of the ranking is
  downloaded like any model (it is small), else the error says what to pull.

A download attempt first asks the host (`engines.weights.unreachable`, bounded by `PROBE_TIMEOUT_S`), so a machine
without internet starts at once on what it has instead of waiting out a download timeout; a host that answers
gets the normal download, with its progress bar and sha256 check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engines.weights import ChecksumMismatch, WeightsUnavailable, default_weights_dir, fetch, unreachable

AUTO = "auto"
GPU_MODEL = "gend-clip-l14"
CPU_MODEL = "effb4-dfdc"
# The MesoNet files, best first, as the project's robustness measurement ranks them (benchmarks/robustness.py on the
# shared FF++ clips, docs/performance.md "Robustness and the quality floors", 2026-12-01/02): meso4-f2f keeps false
# alarms at 3-17 % at every resolution, compression and WebRTC level with AUC 0.55-0.65; mesoinception-f2f calls
# almost everything real (it catches 0-19 % of fakes); the Deepfakes-trained files call 90-100 % of real faces
# under 96 px fake.
FALLBACK_RANKING = ("meso4-f2f", "mesoinception-f2f", "meso4-df", "mesoinception-df")
# How long a host may take to answer before `auto` gives up on downloading from it. Short, so `serve` on a machine
# without internet starts within seconds on the weights it has; long enough for a slow but working link to answer
# one HEAD request. A link slower than this gets the fallback and the warning, and `dfstream models pull` (which
# waits the full download timeout) fetches the strong model.
PROBE_TIMEOUT_S = 4.0


@dataclass(frozen=True, slots=True)
class AutoChoice:
    """What `--model auto` picked here and why; `warning` is set when it fell back to a weaker model."""

    picked: str  # the registry model that runs
    wanted: str  # the strongest model for this machine (the same as `picked` unless it fell back)
    device: str  # what it was decided for: "cuda" or "cpu"
    why: str  # one sentence: why this model
    warning: str | None = None  # the weaker model, why, and how to get the strong one

    @property
    def fell_back(self) -> bool:
        return self.warning is not None

    def to_json(self) -> dict:
        return {"model": AUTO, "picked": self.picked, "wanted": self.wanted, "device": self.device, "why": self.why,
                "warning": self.warning}


def preferred(device: str) -> tuple[str, ...]:
    """The strong models for `device`, best first."""
    return (GPU_MODEL, CPU_MODEL) if device.startswith("cuda") else (CPU_MODEL,)


def _why(name: str, device: str) -> str:
    if name == GPU_MODEL:
        return f"{GPU_MODEL} (GenD): the best public cross-dataset detector, run live on this CUDA GPU"
    return (f"{CPU_MODEL} (ICPR 2020 EfficientNetB4, DFDC): the strongest single network that runs live on "
            f"{'a' if device.startswith('cuda') else 'this'} CPU")


def _files(name: str):
    from engines.registry import get_entry

    entry = get_entry(name)
    return [entry.weights, *entry.companion_files.values(), *entry.extra_weights.values()]


def _obtain(name: str, folder: Path, download: bool, progress: bool) -> str | None:
    """Make every file of `name` present and verified in `folder`; None when done, else why not (in words)."""
    files = _files(name)
    missing = [f for f in files if not (folder / f.filename).is_file()]
    if missing and not download:
        return f"its weights are not in {folder} and downloads are off (--offline)"
    for source in missing:
        problem = unreachable(source, PROBE_TIMEOUT_S)
        if problem is not None:
            return f"its weights are not in {folder}, and {problem}"
    try:
        for source in files:
            fetch(source, folder, allow_download=download, progress=progress)
    except ChecksumMismatch as exc:
        fate = "the download was removed" if missing else "delete the file and pull it again"
        return f"its weights failed their sha256 check ({fate}): {exc}"
    except WeightsUnavailable as exc:
        return str(exc).split(". ")[0]
    return None


def _present(name: str, folder: Path) -> bool:
    return all((folder / f.filename).is_file() for f in _files(name))


def resolve(device: str, weights_dir: Path | None = None, offline: bool = False, progress: bool = False
            ) -> AutoChoice:
    """Decide what `--model auto` runs on `device`, downloading the strong model when it is missing and the host
    answers (never with `offline`). Raises WeightsUnavailable when not even a fallback can be had."""
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    kind = "cuda" if device.startswith("cuda") else "cpu"
    wanted = preferred(kind)
    problems = []
    for name in wanted:
        problem = _obtain(name, folder, not offline, progress)
        if problem is None:
            return AutoChoice(name, wanted[0], kind, _why(name, kind),
                              None if name == wanted[0] else _warning(name, wanted[0], problems, folder))
        problems.append(f"{name}: {problem}")
    for name in FALLBACK_RANKING:
        if _present(name, folder) and _obtain(name, folder, False, progress) is None:
            return AutoChoice(name, wanted[0], kind, f"{name}: the strongest MesoNet file present",
                              _warning(name, wanted[0], problems, folder))
    first = FALLBACK_RANKING[0]
    if not offline and _obtain(first, folder, True, progress) is None:
        return AutoChoice(first, wanted[0], kind, f"{first}: the strongest MesoNet file, downloaded",
                          _warning(first, wanted[0], problems, folder))
    raise WeightsUnavailable(f"--model auto found no usable weights in {folder} ({'; '.join(problems)}). Get the "
                             f"strong model with: dfstream models pull {wanted[-1]}{_dir_flag(weights_dir)} (or the "
                             f"small offline one: dfstream models pull {first})")


def _dir_flag(weights_dir: Path | None) -> str:
    return f" --weights-dir {weights_dir}" if weights_dir is not None else ""


def _warning(picked: str, wanted: str, problems: list[str], folder: Path) -> str:
    return (f"--model auto is running {picked}, a weaker detector than {wanted}, because {'; '.join(problems)}. "
            f"Get the strong one with: dfstream models pull {wanted} --weights-dir {folder}")


def plan(device: str, weights_dir: Path | None = None) -> AutoChoice:
    """What `auto` would pick here, from what is on disk alone (no network): for `models list`."""
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    kind = "cuda" if device.startswith("cuda") else "cpu"
    wanted = preferred(kind)
    for name in wanted:
        if _present(name, folder):
            return AutoChoice(name, wanted[0], kind, _why(name, kind) + "; its weights are here")
    fallback = next((n for n in FALLBACK_RANKING if _present(n, folder)), None)
    why = (_why(wanted[0], kind) + "; its weights are not here yet: auto downloads them on first use"
           + (f", or runs {fallback} (weaker) when they cannot be downloaded" if fallback else ""))
    return AutoChoice(wanted[0], wanted[0], kind, why)
