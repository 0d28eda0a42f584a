"""Robustness of the frame detectors to face size, compression and the WebRTC path, measured side by side.

Run: .venv/bin/python benchmarks/robustness.py [--real GLOB] [--fake GLOB] [--model NAME ...] [--level NAME ...]
     [--fps 2] [--seconds 6] [--json FILE]

Every clip (the shared FF++ c23 ones by default: real/ is label 0, fake/ label 1) is turned into one version per
level, and every version is scored on the same sampled source frames (frame i of the clip is kept when
floor(i * fps / clip_fps) changes, over the first --seconds s), so the levels are paired frame by frame:
- original: the file as it is.
- res-<lines>: scaled with libswscale (PyAV reformat, bilinear) to <lines> lines keeping the aspect (width rounded
  to even), re-encoded H.264 (libx264, --x264-preset) at CRF 18, so that it isolates resolution. Only levels below
  the source's height run (res-N at the source height would be crf-18); the others are listed as skipped.
- crf-<n>: re-encoded H.264 at CRF n at the source resolution.
- webrtc-<vp8|h264>-<kbps>[-<lines>p]: the clip (scaled to <lines> first, default the source's height) is sent
  through a real aiortc RTCPeerConnection pair on loopback in this process: a MediaStreamTrack yields the clip's
  frames paced at their own rate, the codec is chosen with transceiver.setCodecPreferences, and the frames the
  receiving peer decodes are the ones scored (their index is recovered from the RTP timestamp). aiortc's encoders
  set their bitrate from the receiver's REMB and clamp it (VP8 250-1500 kbps, H.264 500-3000 kbps), so the rate
  is pinned: the sender's get_encoder is swapped for subclasses of aiortc's Vp8Encoder/H264Encoder whose
  `target_bitrate` always reads the level's kbps and ignores REMB's writes; the encoders are otherwise aiortc's
  own (VP8 CBR realtime cpu-used -6; H.264 Baseline zerolatency ABR). 300 kbps is where libwebrtc starts a
  video stream; 1500-2500 kbps is where it settles on a clean link at 360p-720p. The achieved rate (payload bytes
  out of the encoder over the clip's duration) is printed per level.

Per version: MTCNN (the product's FaceDetector, default config) on the sampled frames; the largest face of each
frame is kept (the FF++ clips have one subject; a second, background face would carry the wrong label), cut with
crop_faces at each engine's size and margin (as Scanner does) and scored by engine.predict -> p(fake).
Per face-frame it records:
- face px: the short side of the MTCNN box, in pixels of the frame that was scored.
- sharpness: the variance of the 4-neighbour Laplacian (0 1 0 / 1 -4 1 / 0 1 0, valid region) of the grayscale
  (0.299 R + 0.587 G + 0.114 B, float) face crop cut at 128x128 with margin 0 (bilinear), see `sharpness()`.
Per level and model it prints: face-frames of real and fake clips, mean p(fake) on each, the frame-level AUC
(sklearn roc_auc_score, fake = positive), the false-alarm rate (fraction of real face-frames with p(fake) >= the
model's registry threshold), the paired change of real faces' mean p(fake) against `original` on the same
frames (d real), and the median face px and sharpness. Then every face-frame of every level is pooled and binned
by face px and by sharpness tertiles (cut points printed), with the same figures per bin; and per model the
smallest face px (and sharpness) floor above which every bin with at least --min-bin real faces has a
false-alarm rate under --max-false-alarm and, where it has --min-bin fakes too, an AUC above 0.5.

Re-encoded clips go to a temporary folder that is removed at the end. --json FILE writes the configuration,
every face-frame record, and every table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import glob
import json
import math
import platform
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the project's packages, not this folder's engines.py benchmark

import av  # noqa: E402
import numpy as np  # noqa: E402

SHARED = REPO.parent / "shared"
FFPP = SHARED / "data" / "ffpp-c23"
DEFAULT_REAL = str(FFPP / "real" / "*.mp4")
DEFAULT_FAKE = str(FFPP / "fake" / "*.mp4")
DEFAULT_WEIGHTS_DIR = SHARED / "weights" / "mesonet"
DEFAULT_MODELS = ("meso4-df", "meso4-f2f", "mesoinception-df", "mesoinception-f2f")
DEFAULT_LEVELS = (
    "original",
    "res-1080", "res-720", "res-480", "res-360", "res-240",
    "crf-18", "crf-23", "crf-28", "crf-35",
    "webrtc-vp8-300-360p", "webrtc-vp8-1500-360p", "webrtc-vp8-2500-360p",
    "webrtc-h264-300-360p", "webrtc-h264-1500-360p", "webrtc-h264-2500-360p",
    "webrtc-vp8-300-720p", "webrtc-h264-2500-720p",
)
SIZE_EDGES = (64, 96, 128, 192)  # face px bins: <64, 64-96, 96-128, 128-192, >=192
SHARPNESS_SIZE = 128
RES_CRF = 18
WEBRTC_CLOCK = 90000  # RTP video clock; the track's pts are in 1/90000 s
WEBRTC_CONNECT_S = 20.0  # from the offer to the first decoded frame
WEBRTC_IDLE_S = 5.0  # no frame for this long after the first one: the stream is over
LEVEL_RE = re.compile(
    r"^(?:(?P<original>original)|res-(?P<res>\d+)|crf-(?P<crf>\d+)|"
    r"webrtc-(?P<codec>vp8|h264)-(?P<kbps>\d+)(?:-(?P<lines>\d+)p)?)$")


# --- levels -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    name: str
    kind: str  # original | res | crf | webrtc
    lines: int | None = None
    crf: int | None = None
    codec: str | None = None
    kbps: int | None = None


def parse_level(name: str) -> Level:
    m = LEVEL_RE.match(name)
    if not m:
        raise argparse.ArgumentTypeError(
            f"unknown level {name!r}: original, res-<lines>, crf-<n>, webrtc-<vp8|h264>-<kbps>[-<lines>p]")
    if m["original"]:
        return Level(name, "original")
    if m["res"]:
        return Level(name, "res", lines=int(m["res"]), crf=RES_CRF)
    if m["crf"]:
        return Level(name, "crf", crf=int(m["crf"]))
    return Level(name, "webrtc", lines=int(m["lines"]) if m["lines"] else None, codec=m["codec"],
                 kbps=int(m["kbps"]))


# --- measures -----------------------------------------------------------------------------------------------


def sharpness(crop: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of an RGB (H, W, 3) uint8 crop's luma, over the valid region."""
    g = crop.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(set(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


# --- clips and versions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    path: Path
    label: int  # 1 = fake
    width: int
    height: int
    fps: float
    keep: tuple[int, ...]  # sampled frame indices

    @property
    def name(self) -> str:
        return f"{'fake' if self.label else 'real'}/{self.path.name}"

    @property
    def last(self) -> int:
        return self.keep[-1]


def probe(path: Path, label: int, fps: float, seconds: float) -> Clip:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rate = float(s.average_rate or s.guessed_rate or 25)
        n = s.frames or int(float(c.duration or 0) / 1e6 * rate)
        width, height = s.codec_context.width, s.codec_context.height
    n = min(n, int(math.floor(seconds * rate))) if n else int(math.floor(seconds * rate))
    keep = [i for i in range(n) if i == 0 or math.floor(i * fps / rate) != math.floor((i - 1) * fps / rate)]
    return Clip(path, label, width, height, rate, tuple(keep))


def scaled_size(clip: Clip, lines: int | None) -> tuple[int, int]:
    if lines is None or lines >= clip.height:
        return clip.width, clip.height
    return max(2, round(clip.width * lines / clip.height / 2) * 2), lines


def decode(path: Path, keep: Iterable[int], last: int) -> dict[int, np.ndarray]:
    """The RGB frames at indices `keep` (decode order = display order for these files) of a video file."""
    wanted, out = set(keep), {}
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    return out


def source_frames(clip: Clip, size: tuple[int, int], extra: int = 0) -> list[av.VideoFrame]:
    """The clip's first frames up to its last sampled one (and `extra` more, where the clip has them), as
    yuv420p at `size`."""
    frames = []
    with av.open(str(clip.path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            frames.append(frame.reformat(width=size[0], height=size[1], format="yuv420p",
                                         interpolation="BILINEAR"))
            if i >= clip.last + extra:
                break
    return frames


def reencode(clip: Clip, dst: Path, size: tuple[int, int], crf: int, preset: str) -> Path:
    """H.264 at CRF `crf`, `size`, every frame kept with its index as pts (so sampled indices still match)."""
    with av.open(str(dst), "w") as out:
        rate = Fraction(clip.fps).limit_denominator(1001)
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.options = {"crf": str(crf), "preset": preset}
        for i, frame in enumerate(source_frames(clip, size)):
            frame.pts, frame.time_base = i, 1 / rate
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    return dst


# --- WebRTC on loopback -------------------------------------------------------------------------------------


@dataclass
class WebRTCStats:
    sent_bytes: int = 0
    encoded_frames: int = 0
    received_frames: int = 0
    remb_bps: list[int] = field(default_factory=list)
    seconds: float = 0.0


def pinned_encoder(codec_mime: str, bps: int, stats: WebRTCStats):
    """aiortc's own encoder for `codec_mime`, with `target_bitrate` pinned at `bps` (REMB writes are recorded and
    ignored) and the payload bytes it produces counted."""
    from aiortc.codecs.h264 import H264Encoder
    from aiortc.codecs.vpx import Vp8Encoder

    base = Vp8Encoder if codec_mime == "video/vp8" else H264Encoder

    class Pinned(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__()
            # Vp8Encoder also reads its private copy for the rate-control buffer size
            setattr(self, f"_{base.__name__}__target_bitrate", bps)

        @property
        def target_bitrate(self) -> int:
            return bps

        @target_bitrate.setter
        def target_bitrate(self, bitrate: int) -> None:
            stats.remb_bps.append(int(bitrate))

        def encode(self, frame, force_keyframe: bool = False):
            payloads, timestamp = super().encode(frame, force_keyframe)
            stats.sent_bytes += sum(len(p) for p in payloads)
            stats.encoded_frames += 1
            return payloads, timestamp

    return Pinned()


async def _webrtc(frames: list[av.VideoFrame], fps: float, codec: str, bps: int, keep: set[int], last: int,
                  stats: WebRTCStats) -> dict[int, np.ndarray]:
    import aiortc.rtcrtpsender as rtcrtpsender
    from aiortc import (MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpSender)
    from aiortc.mediastreams import MediaStreamError

    mime = f"video/{codec}"

    class ClipTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.i = 0
            self.t0: float | None = None

        async def recv(self) -> av.VideoFrame:
            if self.i >= len(frames):
                self.stop()
                raise MediaStreamError
            if self.t0 is None:
                self.t0 = time.monotonic()
            wait = self.t0 + self.i / fps - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            frame = frames[self.i]
            frame.pts, frame.time_base = round(self.i * WEBRTC_CLOCK / fps), Fraction(1, WEBRTC_CLOCK)
            self.i += 1
            return frame

    original_get_encoder = rtcrtpsender.get_encoder
    rtcrtpsender.get_encoder = lambda c: (pinned_encoder(mime, bps, stats) if c.mimeType.lower() == mime
                                          else original_get_encoder(c))
    config = RTCConfiguration(iceServers=[])  # no STUN: loopback only, and no internet here
    sender_pc, receiver_pc = RTCPeerConnection(config), RTCPeerConnection(config)
    remote: asyncio.Future = asyncio.get_running_loop().create_future()
    receiver_pc.on("track", lambda track: remote.done() or remote.set_result(track))
    got: dict[int, np.ndarray] = {}
    t0 = time.monotonic()
    try:
        transceiver = sender_pc.addTransceiver(ClipTrack(), direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() == mime])
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        track = await asyncio.wait_for(remote, WEBRTC_CONNECT_S)
        pts0 = None
        timeout = WEBRTC_CONNECT_S
        while True:
            try:
                frame = await asyncio.wait_for(track.recv(), timeout)
            except (asyncio.TimeoutError, MediaStreamError):
                break
            timeout = WEBRTC_IDLE_S
            stats.received_frames += 1
            if pts0 is None:
                pts0 = frame.pts
            index = round((frame.pts - pts0) * fps / WEBRTC_CLOCK)
            if index in keep:
                got[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    finally:
        stats.seconds = time.monotonic() - t0
        await sender_pc.close()
        await receiver_pc.close()
        rtcrtpsender.get_encoder = original_get_encoder
    return got


def webrtc_roundtrip(clip: Clip, level: Level) -> tuple[dict[int, np.ndarray], WebRTCStats]:
    from stream.live.server.aiortc_compat import offer_loopback_when_offline

    offer_loopback_when_offline()
    # one more second: aiortc's jitter buffer hands a frame on only when the next one's first packet arrives
    frames = source_frames(clip, scaled_size(clip, level.lines), extra=math.ceil(clip.fps))
    stats = WebRTCStats()
    assert level.codec and level.kbps
    got = asyncio.run(_webrtc(frames, clip.fps, level.codec, level.kbps * 1000, set(clip.keep), clip.last, stats))
    return got, stats


# --- scoring ------------------------------------------------------------------------------------------------


@dataclass
class Record:
    clip: str
    label: int
    level: str
    frame: int
    face_px: float
    sharpness: float
    scores: dict[str, float]


def score_frames(frames: dict[int, np.ndarray], clip: Clip, level: str, detector, engines) -> list[Record]:
    from stream.live.faces import crop_faces

    order = sorted(frames)
    images = [frames[i] for i in order]
    found = []
    for k in range(0, len(images), 8):  # the scanner's detector batch
        found += detector.detect(images[k:k + 8])
    picked = []
    for i, image, faces in zip(order, images, found):
        if faces:
            box = max(faces, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])).box
            picked.append((i, image, box))
    if not picked:
        return []
    keys = sorted({(e.spec.size, e.spec.margin) for e in engines})
    crops = {key: np.concatenate([crop_faces(im, [b], *key) for _, im, b in picked]) for key in keys}
    scores = {e.name: e.predict(crops[(e.spec.size, e.spec.margin)]) for e in engines}
    out = []
    for j, (i, image, box) in enumerate(picked):
        sharp = sharpness(crop_faces(image, [box], SHARPNESS_SIZE, 0.0)[0])
        px = float(min(box[2] - box[0], box[3] - box[1]))
        out.append(Record(clip.name, clip.label, level, i, px, sharp,
                          {name: float(s[j]) for name, s in scores.items()}))
    return out


# --- summaries ----------------------------------------------------------------------------------------------


def summary(records: Sequence[Record], model: str, threshold: float) -> dict:
    real = [r.scores[model] for r in records if r.label == 0]
    fake = [r.scores[model] for r in records if r.label == 1]
    return {
        "n_real": len(real),
        "n_fake": len(fake),
        "p_real": float(np.mean(real)) if real else None,
        "p_fake": float(np.mean(fake)) if fake else None,
        "auc": auc([r.label for r in records], [r.scores[model] for r in records]),
        "false_alarm": float(np.mean(np.asarray(real) >= threshold)) if real else None,
        "detected": float(np.mean(np.asarray(fake) >= threshold)) if fake else None,
        "face_px": float(np.median([r.face_px for r in records])) if records else None,
        "sharpness": float(np.median([r.sharpness for r in records])) if records else None,
    }


def paired_delta(records: Sequence[Record], originals: dict[tuple[str, int], Record], model: str) -> float | None:
    """Mean over real face-frames of (p(fake) at this level - p(fake) of the same frame in `original`)."""
    d = [r.scores[model] - originals[(r.clip, r.frame)].scores[model]
         for r in records if r.label == 0 and (r.clip, r.frame) in originals]
    return float(np.mean(d)) if d else None


def size_bins() -> list[tuple[str, float, float]]:
    edges = (0.0, *SIZE_EDGES, math.inf)
    names = [f"<{SIZE_EDGES[0]}"] + [f"{a}-{b}" for a, b in zip(SIZE_EDGES, SIZE_EDGES[1:])] + [f">={SIZE_EDGES[-1]}"]
    return [(n, lo, hi) for n, lo, hi in zip(names, edges, edges[1:])]


def floor_for(bins: list[tuple[str, float, dict]], min_bin: int, max_fa: float) -> tuple[float | None, str]:
    """The smallest bin lower edge at and above which every bin with >= min_bin real faces has a false-alarm
    rate < max_fa and, where it has >= min_bin fakes, AUC > 0.5. Returns (edge or None, why)."""
    def ok(s: dict) -> bool | None:
        if s["n_real"] < min_bin:
            return None  # too few to judge
        if s["false_alarm"] >= max_fa:
            return False
        return not (s["n_fake"] >= min_bin and s["auc"] is not None and s["auc"] <= 0.5)

    verdicts = [ok(s) for _, _, s in bins]
    if not any(v is not None for v in verdicts):
        return None, "no bin has enough real faces"
    for k, (name, lo, _) in enumerate(bins):
        rest = [v for v in verdicts[k:] if v is not None]
        if rest and all(rest):
            return lo, f"bins from {name} up pass"
    return None, "no floor: the top bin fails" if verdicts[-1] is False else "no floor passes"


def fmt(v, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    return format(v, spec)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


# --- main ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="append", help=f"glob of real clips (repeatable; default {DEFAULT_REAL})")
    parser.add_argument("--fake", action="append", help=f"glob of fake clips (repeatable; default {DEFAULT_FAKE})")
    parser.add_argument("--model", action="append", help=f"repeatable; default {', '.join(DEFAULT_MODELS)}")
    parser.add_argument("--level", action="append", type=parse_level,
                        help="repeatable; default " + ", ".join(DEFAULT_LEVELS))
    parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR)
    parser.add_argument("--fps", type=float, default=2.0, help="sampled frames per second of clip")
    parser.add_argument("--seconds", type=float, default=6.0, help="the first seconds of each clip are used")
    parser.add_argument("--x264-preset", default="veryfast", help="libx264 preset of the res-/crf- re-encodes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--max-false-alarm", type=float, default=0.10)
    parser.add_argument("--min-bin", type=int, default=10, help="face-frames a bin needs to be judged")
    parser.add_argument("--json", type=Path, help="write every record and table here")
    parser.add_argument("--replay", type=Path,
                        help="print the tables again from the records of an earlier --json, measuring nothing")
    args = parser.parse_args(argv)

    import torch

    from engines.registry import build_engine, get_entry
    from stream.live.faces import FaceDetector

    torch.set_num_threads(args.threads)
    models = args.model or list(DEFAULT_MODELS)
    levels = args.level or [parse_level(n) for n in DEFAULT_LEVELS]
    if "original" not in [lv.name for lv in levels]:
        levels = [parse_level("original"), *levels]  # the paired baseline
    started = time.monotonic()
    out: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        out.append(text)

    say("benchmarks/robustness.py: p(fake) of real and fake faces per resolution, compression and WebRTC level")
    say(f"command: {shlex.join([sys.executable, *sys.argv] if argv is None else ['robustness.py', *argv])}")
    say(f"date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')} | host: {platform.node()} | "
        f"python {platform.python_version()} | torch {torch.__version__} ({args.threads} threads) | "
        f"av {av.__version__}")
    measured: dict = {}
    if args.replay:
        saved = json.loads(args.replay.read_text())
        models, thresholds = saved["models"], saved["thresholds"]
        levels = [Level(**d) for d in saved["levels"]]
        level_info, clips = saved["level_info"], saved["clips"]
        records = [Record(**d) for d in saved["records"]]
        measured = {"measured_argv": saved["argv"], "measured_date": saved["date"],
                    "measured_run_s": saved.get("run_s")}
        say(f"replayed from {args.replay}: measured {saved['date']} by {shlex.join(saved['argv'])} in "
            f"{saved.get('run_s', 0):.0f} s")
        say(saved["text"].split("\n")[3] if saved.get("text") else "")
    else:
        say(f"sampling: {args.fps:g} frames/s over the first {args.seconds:g} s of each clip; largest MTCNN face "
            f"per frame; sharpness = var of the 4-neighbour Laplacian of the luma of the 128x128 margin-0 crop")

        clips = []
        for label, patterns in ((0, args.real or [DEFAULT_REAL]), (1, args.fake or [DEFAULT_FAKE])):
            for path in sorted({p for pat in patterns for p in glob.glob(pat)}):
                clips.append(probe(Path(path), label, args.fps, args.seconds))
        if not any(c.label == 0 for c in clips) or not any(c.label == 1 for c in clips):
            parser.error("need at least one real and one fake clip")
        for c in clips:
            say(f"clip {c.name}: {c.width}x{c.height} @ {c.fps:g} fps, {len(c.keep)} sampled frames")

        engines = [build_engine(m, weights_dir=args.weights_dir, allow_download=False) for m in models]
        thresholds = {m: get_entry(m).threshold for m in models}
        detector = FaceDetector()
        records: list[Record] = []
        level_info: dict[str, dict] = {lv.name: {"skipped": [], "clips": 0, "decoded": 0, "wanted": 0,
                                                  "kbps": [], "seconds": []} for lv in levels}
        say()
        with tempfile.TemporaryDirectory(prefix="dfstream-robustness-") as tmp:
            for c in clips:
                for lv in levels:
                    info = level_info[lv.name]
                    t0 = time.monotonic()
                    if lv.kind == "original":
                        frames = decode(c.path, c.keep, c.last)
                    elif lv.kind in ("res", "crf"):
                        if lv.kind == "res" and lv.lines >= c.height:
                            info["skipped"].append(c.name)
                            continue
                        dst = Path(tmp) / f"{c.path.stem}.{lv.name}.mp4"
                        reencode(c, dst, scaled_size(c, lv.lines), lv.crf, args.x264_preset)
                        frames = decode(dst, c.keep, c.last)
                        info["kbps"].append(dst.stat().st_size * 8 / 1000 / ((c.last + 1) / c.fps))
                        dst.unlink()
                    else:
                        frames, stats = webrtc_roundtrip(c, lv)
                        info["kbps"].append(stats.sent_bytes * 8 / 1000 / ((c.last + 1) / c.fps))
                        info.setdefault("remb_kbps_last", []).append(stats.remb_bps[-1] / 1000 if stats.remb_bps else None)
                        info.setdefault("received", []).append(
                            f"{stats.received_frames}/{stats.encoded_frames} in {stats.seconds:.0f} s")
                    info["clips"] += 1
                    info["decoded"] += len(frames)
                    info["wanted"] += len(c.keep)
                    got = score_frames(frames, c, lv.name, detector, engines)
                    records += got
                    info["seconds"].append(time.monotonic() - t0)
                    say(f"  {c.name:34s} {lv.name:22s} frames {len(frames):3d}/{len(c.keep)} faces {len(got):3d} "
                        f"{time.monotonic() - t0:5.1f} s")

    originals = {(r.clip, r.frame): r for r in records if r.level == "original"}
    result: dict = {"argv": sys.argv if argv is None else list(argv), "date": dt.datetime.now().isoformat(),
                    "models": models, "thresholds": thresholds, "levels": [asdict(lv) for lv in levels],
                    "clips": clips if args.replay else [
                        {"name": c.name, "width": c.width, "height": c.height, "fps": c.fps,
                         "sampled": len(c.keep)} for c in clips], **measured,
                    "level_info": level_info, "per_level": [], "by_size": [], "by_sharpness": [], "floors": {}}

    say()
    say("== per level: (versions scored / clips; achieved kbps = mean over clips of the video bitrate)")
    rows = []
    for lv in levels:
        info = level_info[lv.name]
        skipped = f" skipped {len(info['skipped'])} (source not above {lv.lines} lines)" if info["skipped"] else ""
        kbps = f"{np.mean(info['kbps']):.0f} kbps" if info["kbps"] else "-"
        extra = f"; received/encoded frames: {', '.join(info['received'])}" if info.get("received") else ""
        say(f"  {lv.name:22s} {info['clips']}/{len(clips)} clips, frames {info['decoded']}/{info['wanted']}, "
            f"{kbps}{skipped}{extra}")
        for m in models:
            sub = [r for r in records if r.level == lv.name]
            s = summary(sub, m, thresholds[m])
            s["d_real"] = paired_delta(sub, originals, m)
            result["per_level"].append({"level": lv.name, "model": m, **s})
            rows.append([lv.name, m, f"{s['n_real']}/{s['n_fake']}", fmt(s["p_real"]), fmt(s["p_fake"]),
                         fmt(s["auc"]), fmt(s["false_alarm"], ".0%"), fmt(s["detected"], ".0%"),
                         fmt(s["d_real"], "+.3f"),
                         fmt(s["face_px"], ".0f"), fmt(s["sharpness"], ".0f")])
    say()
    say(table(["level", "model", "n real/fake", "p real", "p fake", "AUC", "FA@thr", "TPR@thr", "d real", "face px",
               "sharp"], rows))

    pooled = records
    bins = size_bins()
    sharp_cuts = np.quantile([r.sharpness for r in pooled], [1 / 3, 2 / 3]) if pooled else [0.0, 0.0]
    sharp_bins = [(f"low <{sharp_cuts[0]:.0f}", 0.0, float(sharp_cuts[0])),
                  (f"mid {sharp_cuts[0]:.0f}-{sharp_cuts[1]:.0f}", float(sharp_cuts[0]), float(sharp_cuts[1])),
                  (f"high >={sharp_cuts[1]:.0f}", float(sharp_cuts[1]), math.inf)]
    for title, key, bin_list, field_name in (
            ("face px (short side of the MTCNN box)", "by_size", bins, "face_px"),
            ("sharpness tertiles", "by_sharpness", sharp_bins, "sharpness")):
        say()
        say(f"== all levels pooled, by {title}; threshold per model "
            + ", ".join(f"{m} {t:g}" for m, t in thresholds.items()))
        rows = []
        per_model: dict[str, list] = {m: [] for m in models}
        for m in models:
            for name, lo, hi in bin_list:
                sub = [r for r in pooled if lo <= getattr(r, field_name) < hi]
                s = summary(sub, m, thresholds[m])
                per_model[m].append((name, lo, s))
                result[key].append({"model": m, "bin": name, "lo": lo, "hi": None if math.isinf(hi) else hi, **s})
                rows.append([m, name, f"{s['n_real']}/{s['n_fake']}", fmt(s["p_real"]), fmt(s["p_fake"]),
                             fmt(s["auc"]), fmt(s["false_alarm"], ".0%"), fmt(s["detected"], ".0%")])
        say(table(["model", "bin", "n real/fake", "p real", "p fake", "AUC", "FA@thr", "TPR@thr"], rows))
        for m in models:
            edge, why = floor_for(per_model[m], args.min_bin, args.max_false_alarm)
            result["floors"].setdefault(m, {})[field_name] = {"floor": edge, "why": why}

    say()
    say(f"== floors: the smallest bin edge from which every bin with >= {args.min_bin} real faces has FA < "
        f"{args.max_false_alarm:.0%} and (with >= {args.min_bin} fakes) AUC > 0.5; above it, pooled:")
    rows = []
    for m in models:
        f = result["floors"][m]
        cells = [m]
        for field_name in ("face_px", "sharpness"):
            edge = f[field_name]["floor"]
            if edge is None:
                cells += [f"none ({f[field_name]['why']})", "-", "-", "-"]
                continue
            s = summary([r for r in pooled if getattr(r, field_name) >= edge], m, thresholds[m])
            f[field_name]["above"] = s
            cells += [f"{edge:.0f}", fmt(s["false_alarm"], ".0%"), fmt(s["detected"], ".0%"), fmt(s["auc"])]
        rows.append(cells)
    say(table(["model", "min face px", "FA above", "TPR above", "AUC above", "min sharpness", "FA above",
               "TPR above", "AUC above"], rows))
    elapsed = time.monotonic() - started
    say()
    say(f"{'replay' if args.replay else 'run'} time {elapsed:.0f} s, {len(records)} face-frames x {len(models)} "
        "models")
    result["run_s"] = elapsed
    result["records"] = [asdict(r) for r in records]
    result["text"] = "\n".join(out)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=lambda o: None))
    return result


if __name__ == "__main__":
    main()

# --- Measured ---------------------------------------------------------------------------------------------------
# 2026-12-01, 2 shared CPU cores (load ~8), 1781 s, the default run (all 7 shared FF++ c23 clips: 3 real, 4 fake;
# 2 fps over the first 6 s = 12 frames per clip and level; 1332 face-frames in all):
#   nice -n 10 /work/main/.venv/bin/python benchmarks/robustness.py --json /tmp/robust/full.json
# tables as printed by --replay of that file. Every WebRTC session received 139 of the 139 frames it needed
# (166 for the 30 fps clip), in 6 s of wall time (h264-2500-720p: up to 9 s, the encoder ran behind real time).
#
# == per level: (versions scored / clips; achieved kbps = mean over clips of the video bitrate)
#   original               7/7 clips, frames 84/84, -
#   res-1080               0/7 clips, frames 0/0, - skipped 7 (source not above 1080 lines)
#   res-720                1/7 clips, frames 12/12, 2169 kbps skipped 6 (source not above 720 lines)
#   res-480                5/7 clips, frames 60/60, 686 kbps skipped 2 (source not above 480 lines)
#   res-360                7/7 clips, frames 84/84, 489 kbps
#   res-240                7/7 clips, frames 84/84, 269 kbps
#   crf-18                 7/7 clips, frames 84/84, 1342 kbps
#   crf-23                 7/7 clips, frames 84/84, 743 kbps
#   crf-28                 7/7 clips, frames 84/84, 404 kbps
#   crf-35                 7/7 clips, frames 84/84, 182 kbps
#   webrtc-vp8-300-360p    7/7 clips, frames 84/84, 298 kbps
#   webrtc-vp8-1500-360p   7/7 clips, frames 84/84, 1474 kbps
#   webrtc-vp8-2500-360p   7/7 clips, frames 84/84, 2090 kbps
#   webrtc-h264-300-360p   7/7 clips, frames 84/84, 230 kbps
#   webrtc-h264-1500-360p  7/7 clips, frames 84/84, 1239 kbps
#   webrtc-h264-2500-360p  7/7 clips, frames 84/84, 2098 kbps
#   webrtc-vp8-300-720p    7/7 clips, frames 84/84, 324 kbps
#   webrtc-h264-2500-720p  7/7 clips, frames 84/84, 2056 kbps
#
# level                              model  n real/fake  p real  p fake    AUC  FA@thr  TPR@thr  d real  face px  sharp
# ---------------------  -----------------  -----------  ------  ------  -----  ------  -------  ------  -------  -----
# original                        meso4-df        36/48   0.504   0.374  0.327     50%      29%  +0.000      132    100
# original                       meso4-f2f        36/48   0.221   0.436  0.595      8%      46%  +0.000      132    100
# original                mesoinception-df        36/48   0.381   0.400  0.464     39%      40%  +0.000      132    100
# original               mesoinception-f2f        36/48   0.011   0.198  0.599      0%      19%  +0.000      132    100
# res-1080                        meso4-df          0/0       -       -      -       -        -       -        -      -
# res-1080                       meso4-f2f          0/0       -       -      -       -        -       -        -      -
# res-1080                mesoinception-df          0/0       -       -      -       -        -       -        -      -
# res-1080               mesoinception-f2f          0/0       -       -      -       -        -       -        -      -
# res-720                         meso4-df         0/12       -   0.221      -       -      17%       -      173    144
# res-720                        meso4-f2f         0/12       -   0.857      -       -      92%       -      173    144
# res-720                 mesoinception-df         0/12       -   0.629      -       -      67%       -      173    144
# res-720                mesoinception-f2f         0/12       -   0.435      -       -      50%       -      173    144
# res-480                         meso4-df        24/36   0.636   0.398  0.192     79%      28%  +0.237      116     76
# res-480                        meso4-f2f        24/36   0.277   0.354  0.480     17%      31%  +0.019      116     76
# res-480                 mesoinception-df        24/36   0.600   0.505  0.456     67%      56%  +0.435      116     76
# res-480                mesoinception-f2f        24/36   0.014   0.066  0.505      0%       0%  +0.009      116     76
# res-360                         meso4-df        36/48   0.849   0.710  0.370    100%      79%  +0.345       66     53
# res-360                        meso4-f2f        36/48   0.280   0.429  0.568      8%      46%  +0.058       66     53
# res-360                 mesoinception-df        36/48   0.935   0.838  0.480    100%      88%  +0.554       66     53
# res-360                mesoinception-f2f        36/48   0.021   0.033  0.534      0%       0%  +0.010       66     53
# res-240                         meso4-df        36/48   0.896   0.894  0.484     97%      98%  +0.391       44     30
# res-240                        meso4-f2f        36/48   0.313   0.419  0.595     11%      40%  +0.092       44     30
# res-240                 mesoinception-df        36/48   0.947   0.964  0.514     97%      98%  +0.566       44     30
# res-240                mesoinception-f2f        36/48   0.043   0.045  0.527      0%       0%  +0.032       44     30
# crf-18                          meso4-df        36/48   0.488   0.383  0.346     44%      31%  -0.016      132    101
# crf-18                         meso4-f2f        36/48   0.219   0.448  0.594     11%      48%  -0.002      132    101
# crf-18                  mesoinception-df        36/48   0.387   0.406  0.476     36%      40%  +0.006      132    101
# crf-18                 mesoinception-f2f        36/48   0.012   0.165  0.612      0%      12%  +0.001      132    101
# crf-23                          meso4-df        36/48   0.453   0.390  0.387     42%      29%  -0.051      131     97
# crf-23                         meso4-f2f        36/48   0.218   0.471  0.629      6%      52%  -0.003      131     97
# crf-23                  mesoinception-df        36/48   0.409   0.476  0.520     42%      50%  +0.028      131     97
# crf-23                 mesoinception-f2f        36/48   0.032   0.185  0.544      0%      17%  +0.021      131     97
# crf-28                          meso4-df        36/48   0.487   0.410  0.396     53%      33%  -0.017      132     92
# crf-28                         meso4-f2f        36/48   0.240   0.441  0.607      0%      50%  +0.018      132     92
# crf-28                  mesoinception-df        36/48   0.468   0.486  0.516     50%      46%  +0.087      132     92
# crf-28                 mesoinception-f2f        36/48   0.028   0.147  0.545      0%      10%  +0.017      132     92
# crf-35                          meso4-df        36/48   0.611   0.471  0.380     72%      44%  +0.107      130     70
# crf-35                         meso4-f2f        36/48   0.289   0.456  0.651      3%      48%  +0.067      130     70
# crf-35                  mesoinception-df        36/48   0.598   0.583  0.516     61%      58%  +0.217      130     70
# crf-35                 mesoinception-f2f        36/48   0.016   0.092  0.620      0%       4%  +0.005      130     70
# webrtc-vp8-300-360p             meso4-df        36/48   0.880   0.805  0.430    100%      94%  +0.376       66     45
# webrtc-vp8-300-360p            meso4-f2f        36/48   0.296   0.415  0.616      8%      38%  +0.074       66     45
# webrtc-vp8-300-360p     mesoinception-df        36/48   0.940   0.862  0.524    100%      94%  +0.559       66     45
# webrtc-vp8-300-360p    mesoinception-f2f        36/48   0.029   0.029  0.472      0%       0%  +0.018       66     45
# webrtc-vp8-1500-360p            meso4-df        36/48   0.858   0.708  0.348     97%      75%  +0.354       65     53
# webrtc-vp8-1500-360p           meso4-f2f        36/48   0.311   0.420  0.550     17%      42%  +0.090       65     53
# webrtc-vp8-1500-360p    mesoinception-df        36/48   0.922   0.864  0.466    100%      96%  +0.541       65     53
# webrtc-vp8-1500-360p   mesoinception-f2f        36/48   0.021   0.061  0.516      0%       4%  +0.010       65     53
# webrtc-vp8-2500-360p            meso4-df        36/48   0.866   0.708  0.349    100%      79%  +0.362       65     53
# webrtc-vp8-2500-360p           meso4-f2f        36/48   0.312   0.435  0.568     17%      46%  +0.091       65     53
# webrtc-vp8-2500-360p    mesoinception-df        36/48   0.951   0.837  0.413    100%      92%  +0.570       65     53
# webrtc-vp8-2500-360p   mesoinception-f2f        36/48   0.026   0.070  0.516      0%       4%  +0.015       65     53
# webrtc-h264-300-360p            meso4-df        36/48   0.823   0.743  0.414     97%      88%  +0.319       66     46
# webrtc-h264-300-360p           meso4-f2f        36/48   0.311   0.415  0.622      8%      44%  +0.089       66     46
# webrtc-h264-300-360p    mesoinception-df        36/48   0.907   0.840  0.518     97%      90%  +0.526       66     46
# webrtc-h264-300-360p   mesoinception-f2f        36/48   0.046   0.029  0.513      3%       0%  +0.036       66     46
# webrtc-h264-1500-360p           meso4-df        36/48   0.863   0.705  0.348    100%      77%  +0.359       66     54
# webrtc-h264-1500-360p          meso4-f2f        36/48   0.299   0.441  0.583     11%      46%  +0.078       66     54
# webrtc-h264-1500-360p   mesoinception-df        36/48   0.935   0.845  0.471    100%      92%  +0.554       66     54
# webrtc-h264-1500-360p  mesoinception-f2f        36/48   0.026   0.071  0.516      0%       2%  +0.015       66     54
# webrtc-h264-2500-360p           meso4-df        36/48   0.862   0.702  0.354    100%      75%  +0.358       65     55
# webrtc-h264-2500-360p          meso4-f2f        36/48   0.325   0.449  0.573     14%      46%  +0.104       65     55
# webrtc-h264-2500-360p   mesoinception-df        36/48   0.932   0.848  0.445    100%      94%  +0.551       65     55
# webrtc-h264-2500-360p  mesoinception-f2f        36/48   0.028   0.068  0.476      0%       6%  +0.017       65     55
# webrtc-vp8-300-720p             meso4-df        36/48   0.559   0.439  0.389     61%      35%  +0.055      132     85
# webrtc-vp8-300-720p            meso4-f2f        36/48   0.199   0.380  0.619      6%      42%  -0.023      132     85
# webrtc-vp8-300-720p     mesoinception-df        36/48   0.521   0.504  0.502     50%      52%  +0.140      132     85
# webrtc-vp8-300-720p    mesoinception-f2f        36/48   0.019   0.014  0.502      0%       0%  +0.008      132     85
# webrtc-h264-2500-720p           meso4-df        36/48   0.500   0.377  0.332     50%      29%  -0.004      131     99
# webrtc-h264-2500-720p          meso4-f2f        36/48   0.212   0.448  0.613     11%      48%  -0.009      131     99
# webrtc-h264-2500-720p   mesoinception-df        36/48   0.389   0.461  0.503     39%      48%  +0.008      131     99
# webrtc-h264-2500-720p  mesoinception-f2f        36/48   0.017   0.144  0.594      0%      10%  +0.006      131     99
#
# == all levels pooled, by face px (short side of the MTCNN box); threshold 0.5 for every model
# model                  bin  n real/fake  p real  p fake    AUC  FA@thr  TPR@thr
# -----------------  -------  -----------  ------  ------  -----  ------  -------
# meso4-df               <64      150/158   0.906   0.920  0.625    100%     100%
# meso4-df             64-96      230/319   0.769   0.709  0.473     93%      78%
# meso4-df            96-128        58/51   0.421   0.317  0.373     36%      12%
# meso4-df           128-192      123/180   0.444   0.218  0.194     43%       9%
# meso4-df             >=192         3/60   0.530   0.219  0.161     33%      22%
# meso4-f2f              <64      150/158   0.293   0.497  0.747      8%      58%
# meso4-f2f            64-96      230/319   0.260   0.455  0.646      9%      47%
# meso4-f2f           96-128        58/51   0.227   0.286  0.405     10%      24%
# meso4-f2f          128-192      123/180   0.280   0.265  0.400     13%      21%
# meso4-f2f            >=192         3/60   0.299   0.820  1.000      0%      95%
# mesoinception-df       <64      150/158   0.955   0.955  0.599    100%     100%
# mesoinception-df     64-96      230/319   0.895   0.840  0.550     97%      90%
# mesoinception-df    96-128        58/51   0.334   0.298  0.468     26%      29%
# mesoinception-df   128-192      123/180   0.224   0.241  0.378     21%      25%
# mesoinception-df     >=192         3/60   0.263   0.646  0.811     33%      65%
# mesoinception-f2f      <64      150/158   0.044   0.053  0.567      0%       0%
# mesoinception-f2f    64-96      230/319   0.014   0.049  0.541      0%       3%
# mesoinception-f2f   96-128        58/51   0.026   0.047  0.419      2%       0%
# mesoinception-f2f  128-192      123/180   0.019   0.085  0.466      0%       8%
# mesoinception-f2f    >=192         3/60   0.000   0.511  1.000      0%      43%
#
# == all levels pooled, by sharpness tertiles; threshold 0.5 for every model
# model                    bin  n real/fake  p real  p fake    AUC  FA@thr  TPR@thr
# -----------------  ---------  -----------  ------  ------  -----  ------  -------
# meso4-df             low <53      191/253   0.858   0.881  0.611     98%      99%
# meso4-df           mid 53-86      227/217   0.722   0.646  0.459     81%      67%
# meso4-df           high >=86      146/298   0.448   0.259  0.271     45%      15%
# meso4-f2f            low <53      191/253   0.288   0.432  0.654      9%      47%
# meso4-f2f          mid 53-86      227/217   0.292   0.381  0.505     11%      37%
# meso4-f2f          high >=86      146/298   0.211   0.480  0.658      9%      50%
# mesoinception-df     low <53      191/253   0.920   0.920  0.599     99%      98%
# mesoinception-df   mid 53-86      227/217   0.721   0.664  0.512     75%      71%
# mesoinception-df   high >=86      146/298   0.393   0.467  0.523     38%      48%
# mesoinception-f2f    low <53      191/253   0.026   0.042  0.612      0%       0%
# mesoinception-f2f  mid 53-86      227/217   0.022   0.031  0.480      0%       0%
# mesoinception-f2f  high >=86      146/298   0.025   0.184  0.573      1%      16%
#
#
# == floors: the smallest bin edge from which every bin with >= 10 real faces has FA < 10% and (with >= 10 fakes)
#    AUC > 0.5; above it, pooled:
#    face px:   none passes, for any of the four models.
#    sharpness: meso4-f2f >= 86 (FA 9%, TPR 50%, AUC 0.658); mesoinception-f2f >= 86 (FA 1%, TPR 16%, AUC 0.573);
#               meso4-df and mesoinception-df: none (the top tertile fails: FA 45% / 38%).
