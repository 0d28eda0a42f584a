"""Alert recordings from a real `serve`: the shared Deepfakes video raises an alert, its stream is removed so
the alert ends, and the recording, overlay track and manifest it leaves are checked with PyAV and the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest

from engines.registry import DEFAULT_MODEL, build_engine
from stream.config.evidence import EvidencePolicy
from stream.config.serve import ServeConfig
from stream.live.evidence.manifest import sha256_of
from stream.live.sources.live import SourceConfig
from stream.messages import WIRE

from support.shared import FFPP, MESONET_WEIGHTS
from support.live_server import LiveServer
from support.serve_fakes import ClipFace

VIDEO = FFPP / "fake" / "Deepfakes_519_515.mp4"
PRE_S = 5.0
ALERT_TIMEOUT_S = 60.0
END_TIMEOUT_S = 30.0
AFTER_START_S = 3.0  # the stream runs this long after the alert starts, before it is removed


SLICES = {1, 5}  # H.264 coded slices (non-IDR, IDR): the picture data, whatever parameter sets travel with it


def avcc_nals(data: bytes) -> list[bytes]:
    """The NAL units of an MP4 (length-prefixed) H.264 sample."""
    out, i = [], 0
    while i + 4 <= len(data):
        size = int.from_bytes(data[i:i + 4], "big")
        out.append(data[i + 4:i + 4 + size])
        i += 4 + size
    return out


def slice_hashes(nals) -> list[str]:
    return [hashlib.sha256(n).hexdigest() for n in nals if n and n[0] & 0x1F in SLICES]


def wait_for(msgs: list, pred, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in list(msgs):
            if pred(m):
                return m
        time.sleep(0.1)
    return None


def is_alert(event: str):
    return lambda m: m.get("type") == "alert" and m.get("event") == event


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One serve run: alert start, stream removed, end with custody. Returns (data_dir, messages)."""
    data_dir = tmp_path_factory.mktemp("data")
    engine = build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)
    config = ServeConfig(port=0, data_dir=data_dir, sources=[SourceConfig(name="df", url=str(VIDEO))],
                         evidence=EvidencePolicy(burn_in=True))
    msgs: list[dict] = []
    with LiveServer(config, [engine], ClipFace.of(VIDEO)) as server:  # detection is not under test
        server.service.bus.subscribe(WIRE, msgs.append, wire=True)
        start = wait_for(msgs, is_alert("start"), ALERT_TIMEOUT_S)
        assert start is not None, "no alert from the Deepfakes video"
        time.sleep(AFTER_START_S)
        last_overlay = max(m["time"] for m in msgs if m.get("type") == "overlay")
        server.service.remove("df")
        end = wait_for(msgs, lambda m: is_alert("end")(m) and m["id"] == start["id"], END_TIMEOUT_S)
        assert end is not None, "the alert did not end after its stream was removed"
    return data_dir, msgs, start, end, last_overlay


def test_recording_is_full_frame_with_preroll_and_runs_to_the_end(served):
    data_dir, msgs, start, end, last_overlay = served
    ev = end["evidence"]
    assert ev["recording_state"] == "complete" and start["evidence"]["recording_state"] == "recording"
    track = json.loads(Path(ev["overlay"]).read_text())
    with av.open(str(VIDEO)) as src:
        s = src.streams.video[0]
        size, rate = (s.codec_context.width, s.codec_context.height), float(s.average_rate)
        src_slices = {h for p in src.demux(s) if p.size for h in slice_hashes(avcc_nals(bytes(p)))}
    with av.open(ev["recording"]) as rec:
        v = rec.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == size
        times = [f.time for f in rec.decode(v)]
    assert times, "the recording decodes to no frame"
    first_fake = track["first_fake"] + track["clip_start_source_time"]  # source time of the first fake frame
    # starts the pre-roll ahead of the first frame judged fake (or at the video's start when it is nearer)
    assert track["clip_start_source_time"] <= max(0.0, first_fake - PRE_S) + 1e-6
    # runs to the end: to the last frame analysed before the stream was removed
    assert track["clip_start_source_time"] + times[-1] >= last_overlay - 1.0 / rate
    duration = times[-1] - times[0] + 1.0 / rate
    assert abs(len(times) - duration * rate) <= 1, (len(times), duration * rate)
    # remuxed, not re-encoded: every recorded slice is one of the file's own (keyframes also carry the parameter
    # sets in-band, so whole samples may differ by those)
    with av.open(ev["recording"]) as rec:
        recorded = [h for p in rec.demux(video=0) if p.size for h in slice_hashes(avcc_nals(bytes(p)))]
    assert len(recorded) == len(times) and all(h in src_slices for h in recorded), "slices differ from the source's"
    # the overlay track: every entry inside the clip, boxes and scores as live
    assert track["frames"] and all(0 <= f["t"] <= times[-1] + 1e-3 for f in track["frames"])
    assert any(f["faces"] and f["faces"][0]["box"] and f["faces"][0]["score"] is not None for f in track["frames"])
    # the moov index is first (faststart): a browser can play while downloading
    head = Path(ev["recording"]).read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))
    # the status reported the ring's memory
    rings = [m["ring"] for m in msgs if m.get("type") == "status" and m.get("ring")]
    assert rings and rings[-1]["mode"] == "remux" and 0 < rings[-1]["bytes"] <= rings[-1]["max_bytes"]


def test_end_message_carries_the_chain_of_custody(served):
    data_dir, _, _, end, _ = served
    custody = end["custody"]
    folder = Path(end["evidence"]["manifest"]).parent
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"recording.mp4", "overlay.json", "snapshot.jpg", "clip.mp4"}
    for name, entry in manifest["files"].items():
        assert entry == {"sha256": sha256_of(folder / name), "size": (folder / name).stat().st_size}
    assert custody["files"] == manifest["files"]
    assert custody["manifest_sha256"] == sha256_of(folder / "manifest.json")
    assert custody["source"] == str(VIDEO) and custody["dfstream"]
    assert custody["models"] == [{"name": DEFAULT_MODEL, "weights_sha256": manifest["models"][0]["weights_sha256"]}]
    assert len(custody["models"][0]["weights_sha256"]) == 64


def dfstream(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", *args], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])


def test_verify_passes_then_names_the_flipped_file(served, tmp_path):
    data_dir, _, _, end, _ = served
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    ok = dfstream("alerts", "verify", end["id"], "--data-dir", str(copy))
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and "matches the alert log" in ok.stdout
    recording = copy / "evidence" / end["id"] / "recording.mp4"
    data = bytearray(recording.read_bytes())
    data[len(data) // 2] ^= 0x01
    recording.write_bytes(bytes(data))
    bad = dfstream("alerts", "--data-dir", str(copy), "verify", end["id"])
    assert bad.returncode == 1
    assert "recording.mp4" in bad.stdout and "overlay.json" not in bad.stdout
    # a manifest rewritten to match changed files is caught by the hash in the alert log
    manifest = copy / "evidence" / end["id"] / "manifest.json"
    m = json.loads(manifest.read_text())
    m["files"]["recording.mp4"]["sha256"] = sha256_of(recording)
    manifest.write_text(json.dumps(m))
    forged = dfstream("alerts", "verify", end["id"], "--data-dir", str(copy))
    assert forged.returncode == 1 and "manifest.json" in forged.stdout


def test_verify_and_export_refuse_bad_input_and_change_nothing(served, tmp_path):
    data_dir, _, _, end, _ = served
    before = {p: p.stat().st_mtime_ns for p in data_dir.rglob("*")}
    for args in (["verify", "../../etc"], ["verify", "0" * 32], ["export", end["id"], "--out", str(tmp_path / "x.tar")],
                 ["export", end["id"], "--out", str(tmp_path / "missing" / "x.zip")]):
        got = dfstream("alerts", *args, "--data-dir", str(data_dir))
        assert got.returncode == 2, (args, got.stdout, got.stderr)
        assert got.stderr.strip().startswith("dfstream alerts")
    assert {p: p.stat().st_mtime_ns for p in data_dir.rglob("*")} == before
    assert list(tmp_path.iterdir()) == []


def test_export_bundles_manifest_files_and_messages(served, tmp_path):
    data_dir, _, start, end, _ = served
    out = tmp_path / "alert.zip"
    got = dfstream("alerts", "export", end["id"], "--out", str(out), "--data-dir", str(data_dir))
    assert got.returncode == 0, got.stderr
    with zipfile.ZipFile(out) as z:
        names = {Path(n).name for n in z.namelist()}
        assert names >= {"manifest.json", "recording.mp4", "overlay.json", "snapshot.jpg", "messages.json"}
        messages = json.loads(z.read(f"{end['id']}/messages.json"))
        manifest = json.loads(z.read(f"{end['id']}/manifest.json"))
        assert hashlib.sha256(z.read(f"{end['id']}/recording.mp4")).hexdigest() == \
            manifest["files"]["recording.mp4"]["sha256"]
    assert [m["event"] for m in messages][0] == "start" and messages[-1]["event"] == "end"
    assert {m["id"] for m in messages} == {start["id"]}


def test_plain_alerts_listing_still_works(served):
    data_dir, _, start, _, _ = served
    got = dfstream("alerts", "--data-dir", str(data_dir))
    assert got.returncode == 0 and start["id"] in got.stdout


def test_burn_in_copy_has_the_boxes_drawn_in(served):
    _, _, _, end, _ = served
    track = json.loads(Path(end["evidence"]["overlay"]).read_text())
    out = Path(end["evidence"]["recording"]).with_name("recording_burned.mp4")
    assert "recording_burned.mp4" in end["custody"]["files"]  # hashed like the others
    with av.open(end["evidence"]["recording"]) as a, av.open(str(out)) as b:
        plain = {round(f.time, 3): f.to_ndarray(format="rgb24") for f in a.decode(video=0)}
        burned = {round(f.time, 3): f.to_ndarray(format="rgb24") for f in b.decode(video=0)}
    assert len(plain) == len(burned) and set(burned) == set(plain)
    entry = next(f for f in track["frames"] if f["faces"] and f["faces"][0]["score"] is not None)
    t = min(plain, key=lambda k: abs(k - entry["t"]) if k >= entry["t"] - 1e-3 else 1e9)
    x1, y1, x2, y2 = (int(v) for v in entry["faces"][0]["box"])
    diff = np.abs(burned[t].astype(int) - plain[t].astype(int))
    cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
    edge, inside = diff[y1:y2, x1:x1 + 2].mean(), diff[cy - 5:cy + 5, cx - 5:cx + 5].mean()
    assert edge > 40 > inside, (edge, inside)  # the box's edge is painted; the face inside is left as it was


def test_serve_burn_in_flag_sets_the_policy():
    from stream.cli import build_parser
    from stream.cli.serve import config_from_args

    args = build_parser().parse_args(["serve", "--burn-in", "--data-dir", "/tmp/x"])
    assert config_from_args(args).evidence.burn_in is True
    args = build_parser().parse_args(["serve", "--data-dir", "/tmp/x"])
    assert config_from_args(args).evidence.burn_in is False
