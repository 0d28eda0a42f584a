"""Per-camera baselines on paired footage: a baseline learned on the start of a real clip, then the rest of that
clip and its face-swapped twin judged with it, side by side with the global bar.

Run: .venv/bin/python benchmarks/baselines.py [--model NAME ...] [--tracks subject|all] [--json FILE]
     [--cache-dir DIR]

The shared FF++ c23 clips are pairs: real/519 <-> fake/Deepfakes_519_515, real/634 <-> fake/FaceSwap_634_660,
real/004 <-> fake/NeuralTextures_004_982 show the same scene and person (the fake's target id). fake/
Face2Face_750_743 has no real twin: it is judged with every camera's baseline as an unpaired fake, and each other
camera's real clip as "a different person" (a false alarm too).

Per clip, the product's own path: PyAV at 5 analysed fps, MTCNN (FaceDetector default config), IoU tracks, crops
(cached by evaluate.CropCache, so reruns only score), each engine's quality gate (below its floor a face is not
judged), engine.predict. `--tracks subject` (default) keeps the clip's longest track (FF++ manipulates one face;
the other detections are hands and a background face, the same in real and fake twins); `all` judges every track as
`scan --baseline` does. A judged stretch is "called fake" when any of its tracks' rolling verdicts (median 9,
k = 3 hysteresis, stream/live/verdicts/policy.py) turns fake, i.e. an alert would be raised.

Stretches learned from: the first 60 % of the real clip's sampled frames, and its first 4 s and 2 s. Judged: the
last 40 % of the real clip (false alarm if called fake), the whole swapped twin (catch), the unpaired fake, the
other cameras' last 40 % (a different person). Rules:
- global: the verdict policy's own bar (t_high 0.7), no baseline;
- naive-max: the bar just above the highest smoothed score of the stretch (the issue's strawman);
- camera: stream/live/verdicts/baseline.fit with the default BaselinePolicy (conformal / bounded, floor, ceiling),
  except that it learns on a stretch the global bar already calls fake (learn_on_fake; marked where the default
  would refuse);
- camera a=0.1: the same with alpha 0.1 (finite conformal bound from 9 blocks: the bar may drop to the floor);
- camera c=X: the same with ceiling_margin X; the leave-one-pair-out table picks X on two pairs (fewest false
  alarms, then most catches, then the largest X) and reports the third;
- clip-mean: the video-level decision instead of the rolling one: the judged stretch's mean smoothed score against
  the camera bar;
- two-sided: the camera bar with `direction: both` (opt-in): also a lower bar, floor_margin logits below the lowest
  level the stretch held (or the lower conformal bound), alpha split between the bars; a stretch held below it is
  called fake as "unlike this camera" (marked `<` in the per-pair cells and counted apart in the totals);
- two-sided f=X: the same with floor_margin X, picked by leave-one-pair-out like the ceiling margin.
Models: each MesoNet file and `mean4`, the four fused by the mean p(fake) of the files that may judge a face (the
product's `--model a --model b ...` fusion).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import shlex
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the project's packages, not this folder's engines.py benchmark

import numpy as np  # noqa: E402

FFPP = REPO.parent / "shared" / "data" / "ffpp-c23"
WEIGHTS = REPO.parent / "shared" / "weights" / "mesonet"
PAIRS = (("real/519", "fake/Deepfakes_519_515"), ("real/634", "fake/FaceSwap_634_660"),
         ("real/004", "fake/NeuralTextures_004_982"))
UNPAIRED = "fake/Face2Face_750_743"
UNLIKE = "unlike this camera"  # stream.live.verdicts.policy.UNLIKE_CAMERA
FILES = ("meso4-f2f", "meso4-df", "mesoinception-df", "mesoinception-f2f")
ENSEMBLE = "mean4"
STRETCHES = ("60%", "4s", "2s")
SPLIT = 0.6  # the share of the real clip a baseline may learn from; the rest is judged
FPS = 5.0  # the live default analysed fps (SourceConfig.analysed_fps)
MARGINS = (0.5, 1.0, 1.5, 2.0, 3.0)  # ceiling margins, and floor margins of the two-sided rule
ALPHA_SWEEP = 0.1  # a looser promise: the conformal bound is finite from 9 effective samples


@dataclass(frozen=True)
class Clip:
    """One clip's judged face-frames: sampled-frame ordinal, track and each engine's p(fake) (None: gated)."""

    frames: int
    index: np.ndarray
    track: np.ndarray
    scores: dict[str, list[float | None]]

    def tracks(self, members: Sequence[str], lo: float, hi: float, subject: bool) -> tuple[list[list[dict]], int]:
        """Per track, the engine scores of face-frames whose frame is in [lo, hi) of the clip; and gated faces."""
        main = Counter(self.track.tolist()).most_common(1)[0][0]
        out: dict[int, list[dict]] = {}
        gated = 0
        for i, (idx, t) in enumerate(zip(self.index, self.track)):
            if not lo * self.frames <= idx < hi * self.frames or (subject and t != main):
                continue
            s = {m: self.scores[m][i] for m in members if self.scores[m][i] is not None}
            if s:
                out.setdefault(int(t), []).append(s)
            else:
                gated += 1
        return list(out.values()), gated


def load_clips(cache_dir: Path | None) -> dict[str, Clip]:
    from engines.quality import floor_of
    from engines.registry import build_engine
    from stream.jobs.crop_cache import CropCache, FaceCrops, default_crop_cache_dir
    from stream.jobs.scan import Scanner, ScanOptions

    engines = [build_engine(n, weights_dir=WEIGHTS, device="cpu", allow_download=False) for n in FILES]
    scanner = Scanner(engines, [0.5], ScanOptions(fps=FPS))
    cache = CropCache(cache_dir or default_crop_cache_dir(), scanner)
    clips = {}
    for name in [c for pair in PAIRS for c in pair] + [UNPAIRED]:
        path = FFPP / f"{name}.mp4"
        entry = cache.entry(path)
        crops = cache.load(entry)
        if crops is None:
            print(f"  decoding {name} (cached next time)", file=sys.stderr, flush=True)
            crops = FaceCrops.extract(scanner, path, _Quiet())
            cache.save(entry, crops)
        scores = {}
        for e in engines:
            p = e.predict(crops.crops[(e.spec.size, e.spec.margin)]).tolist() if len(crops.index) else []
            scores[e.name] = [None if floor_of(e).reason(e.name, px, sh) else float(s)
                              for s, px, sh in zip(p, crops.face_px, crops.sharpness)]
        clips[name] = Clip(crops.frames, crops.index, crops.track, scores)
    return clips


class _Quiet:
    def start(self, item) -> None: ...
    def frames(self, n: int) -> None: ...
    def done(self, result) -> None: ...


def stretch_bounds(clip: Clip, stretch: str) -> float:
    """The share of the clip's sampled frames a stretch covers from its start."""
    return SPLIT if stretch.endswith("%") else min(SPLIT, float(stretch[:-1]) * FPS / clip.frames)


def called(tracks: list[list[dict]], policy, clip_mean: bool = False) -> bool:
    """An alert would be raised: any track's rolling verdict turns fake (or its mean smoothed score >= the bar)."""
    from stream.live.verdicts.baseline import smoothed_series

    if clip_mean:
        return any(np.mean(s) >= policy.t_high for t in tracks if (s := smoothed_series(t, policy)))
    return bool(fakes(tracks, policy))


def fakes(tracks: list[list[dict]], policy) -> set[str | None]:
    """The reasons of the tracks whose rolling verdict turns fake: None (above the bar) or "unlike this camera"."""
    from stream.live.verdicts.baseline import run_track

    return {j.reason for t in tracks if (j := run_track(t, policy)).verdict == "fake"}


def under_only(tracks: list[list[dict]], policy) -> bool:
    """Called fake only by the lower bar ("unlike this camera"), not above the camera bar."""
    return fakes(tracks, policy) == {UNLIKE}


def shifted(policy, bar: float):
    """`policy` with t_high at `bar` and t_low moved by the same logit shift (as fit does)."""
    lg = lambda p: math.log(p / (1 - p))  # noqa: E731
    t_low = 1 / (1 + math.exp(-(lg(policy.t_low) + lg(bar) - lg(policy.t_high))))
    return policy.model_copy(update={"t_high": bar, "t_low": min(t_low, bar)})


def judge_all(clips: dict[str, Clip], members: Sequence[str], stretch: str, subject: bool) -> list[dict]:
    """Per pair and rule: did the baseline fit (or why not), and which judged stretches were called fake."""
    from stream.config.verdicts import BaselinePolicy, VerdictPolicy
    from stream.live.verdicts.baseline import BaselineError, EngineKey, fit, smoothed_series

    keys = [EngineKey(model=m, weights_sha256="0" * 64) for m in members]
    rows = []
    for real, fake in PAIRS:
        c = clips[real]
        base, gated = c.tracks(members, 0.0, stretch_bounds(c, stretch), subject)
        judged = {"rest": c.tracks(members, SPLIT, 1.0, subject)[0],
                  "swap": clips[fake].tracks(members, 0.0, 1.0, subject)[0],
                  "unpaired": clips[UNPAIRED].tracks(members, 0.0, 1.0, subject)[0],
                  "others": [clips[r].tracks(members, SPLIT, 1.0, subject)[0] for r, _ in PAIRS if r != real]}
        policies: dict[str, object] = {"global": VerdictPolicy()}
        notes: dict[str, str] = {}
        for rule, bp in [("camera", BaselinePolicy(learn_on_fake=True)),
                         ("camera a=0.1", BaselinePolicy(learn_on_fake=True, alpha=ALPHA_SWEEP))] + [
                (f"camera c={m:g}", BaselinePolicy(learn_on_fake=True, ceiling_margin=m)) for m in MARGINS] + [
                ("two-sided", BaselinePolicy(learn_on_fake=True, direction="both"))] + [
                (f"two-sided f={m:g}", BaselinePolicy(learn_on_fake=True, direction="both", floor_margin=m))
                for m in MARGINS]:
            try:
                b = fit(base, VerdictPolicy(baseline=bp), model="+".join(members), engines=keys, source=real,
                        fps=FPS, gated=gated)
                policies[rule] = b.verdict_policy()
                notes[rule] = f"{b.threshold:.3f} {b.rule}" + (f"/{b.clipped}" if b.clipped else "")
                if b.under is not None:
                    u = b.under
                    notes[rule] += f", under {u.threshold:.4f} {u.rule}" + (f"/{u.clipped}" if u.clipped else "")
            except BaselineError as exc:
                policies[rule] = None
                notes[rule] = "refused: " + str(exc).split(":")[0].split(" (")[0]
        try:  # the benchmark learns on every stretch; the product refuses one the global bar calls fake
            fit(base, VerdictPolicy(), model="+".join(members), engines=keys, source=real, fps=FPS, gated=gated)
        except BaselineError as exc:
            if "already calls" in str(exc):
                notes["camera"] += " (refused by default: already fake)"
        series = [x for t in base if (s := smoothed_series(t, VerdictPolicy())) for x in s]
        policies["naive-max"] = shifted(VerdictPolicy(), min(max(series) + 1e-9, 1 - 1e-6)) if series else None
        policies["clip-mean"] = policies["camera"]
        for rule, policy in policies.items():
            row = {"pair": real, "rule": rule, "note": notes.get(rule, "")}
            if policy is not None:
                mean = rule == "clip-mean"
                row |= {"fa": called(judged["rest"], policy, mean), "catch": called(judged["swap"], policy, mean),
                        "unpaired": called(judged["unpaired"], policy, mean),
                        "other_fa": sum(called(o, policy, mean) for o in judged["others"])}
                if policy.t_under is not None:  # which calls only the lower bar made
                    row["under"] = {"fa": under_only(judged["rest"], policy),
                                    "catch": under_only(judged["swap"], policy),
                                    "unpaired": under_only(judged["unpaired"], policy),
                                    "other_fa": sum(under_only(o, policy) for o in judged["others"])}
            rows.append(row)
    return rows


RULES = ("global", "naive-max", "camera", "camera a=0.1", "clip-mean", "two-sided")


def table(rows: list[dict], rules: Sequence[str]) -> list[str]:
    """One line per rule: per pair fa/catch, and totals over the pairs that fitted."""
    out = []
    for rule in rules:
        mine = [r for r in rows if r["rule"] == rule]
        fitted = [r for r in mine if "fa" in r]
        cells = []
        for r in mine:
            pair = r["pair"].split("/")[1]
            under = r.get("under", {})
            cells.append(f"{pair}: {r['note'] or '-'}" if "fa" not in r else
                         f"{pair}: {'FA' if r['fa'] else 'ok'}{'<' * under.get('fa', False)}/"
                         f"{'caught' if r['catch'] else 'missed'}{'<' * under.get('catch', False)}")
        n = len(fitted)
        tot = (f"false alarms {sum(r['fa'] for r in fitted)}/{n}, catches {sum(r['catch'] for r in fitted)}/{n}, "
               f"unpaired {sum(r['unpaired'] for r in fitted)}/{n}, other person "
               f"{sum(r['other_fa'] for r in fitted)}/{2 * n}") if n else "no pair fitted"
        if n and any("under" in r for r in fitted):
            tot += " (by the lower bar alone: " + ", ".join(
                f"{k} {sum(r['under'][k] for r in fitted)}" for k in ("fa", "catch", "unpaired", "other_fa")) + ")"
        bars = "; ".join(f"{r['pair'].split('/')[1]} {r['note']}" for r in mine if r["note"] and "fa" in r)
        out.append(f"    {rule:<13} {' | '.join(cells):<62} {tot}" + (f"   [bars: {bars}]" if bars else ""))
    return out


def leave_one_pair_out(rows: list[dict], family: str = "camera c") -> list[str]:
    """Pick the margin of `family` ("camera c": the ceiling margin, "two-sided f": the floor margin) on two pairs
    (fewest false alarms, then most catches, then the largest margin), report the third."""
    out = []
    for real, _ in PAIRS:
        def cost(m: float) -> tuple:
            train = [r for r in rows if r["rule"] == f"{family}={m:g}" and r["pair"] != real and "fa" in r]
            return (sum(r["fa"] for r in train), -sum(r["catch"] for r in train), -m)
        best = min(MARGINS, key=cost)
        held = next(r for r in rows if r["rule"] == f"{family}={best:g}" and r["pair"] == real)
        verdict = ("refused" if "fa" not in held else
                   f"{'FA' if held['fa'] else 'ok'}/{'caught' if held['catch'] else 'missed'}, unpaired "
                   f"{'caught' if held['unpaired'] else 'missed'}, other person {held['other_fa']}/2")
        out.append(f"      held out {real.split('/')[1]}: picked {family.split()[-1]}={best:g} on the other two -> "
                   f"{verdict}")
    return out


def ranges(clips: dict[str, Clip], model: str, subject: bool) -> list[str]:
    """The subject's smoothed p(fake) per pair: learned stretch (first 60 %), rest of the real clip, swapped twin
    (min / median / max): where the swap sits against what the camera showed as real."""
    from stream.config.verdicts import VerdictPolicy
    from stream.live.verdicts.baseline import smoothed_series

    members = list(FILES) if model == ENSEMBLE else [model]

    def span(clip: Clip, lo: float, hi: float) -> str:
        s = [x for t in clip.tracks(members, lo, hi, subject)[0] for x in smoothed_series(t, VerdictPolicy())]
        return "gated" if not s else f"{min(s):.3f}/{np.median(s):.3f}/{max(s):.3f}"

    return [f"    {real.split('/')[1]}: learned {span(clips[real], 0, SPLIT)}  rest {span(clips[real], SPLIT, 1)}  "
            f"swap {span(clips[fake], 0, 1)}" for real, fake in PAIRS]


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", choices=[*FILES, ENSEMBLE],
                        help=f"repeatable; default all: {', '.join(FILES)}, {ENSEMBLE}")
    parser.add_argument("--tracks", choices=["subject", "all"], default="subject")
    parser.add_argument("--cache-dir", type=Path, default=None, help="face-crop cache (default eval's)")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    print("benchmarks/baselines.py: per-camera baselines on the shared FF++ pairs")
    print(f"command: {shlex.join(['benchmarks/baselines.py', *(sys.argv[1:] if argv is None else argv)])}")
    print(f"date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')} | host: {platform.node()} | "
          f"python {platform.python_version()} | torch {torch.__version__}")
    clips = load_clips(args.cache_dir)
    for name, c in clips.items():
        n = len(c.index)
        gated = {m: sum(s is None for s in c.scores[m]) for m in FILES}
        print(f"  {name}: {c.frames} sampled frames, {n} face-frames, {len(set(c.track.tolist()))} tracks; gated "
              + ", ".join(f"{m} {g}" for m, g in gated.items()))
    result: dict = {"tracks": args.tracks, "rows": {}}
    for model in args.model or [*FILES, ENSEMBLE]:
        members = list(FILES) if model == ENSEMBLE else [model]
        print(f"\n  {model}: smoothed p(fake) ({args.tracks} tracks), min/median/max")
        print("\n".join(ranges(clips, model, args.tracks == "subject")))
        for stretch in STRETCHES:
            rows = judge_all(clips, members, stretch, args.tracks == "subject")
            result["rows"][f"{model} {stretch}"] = rows
            print(f"\n  {model}, learned on the real clip's first {stretch} ({args.tracks} tracks); per pair "
                  "rest-of-real / swapped twin:")
            print("\n".join(table(rows, RULES)))
            print("    leave-one-pair-out for the ceiling margin " + ", ".join(f"{m:g}" for m in MARGINS) + ":")
            print("\n".join(leave_one_pair_out(rows)))
            print("    leave-one-pair-out for the two-sided floor margin " + ", ".join(f"{m:g}" for m in MARGINS) + ":")
            print("\n".join(leave_one_pair_out(rows, "two-sided f")))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=bool))
    return result


if __name__ == "__main__":
    main()
