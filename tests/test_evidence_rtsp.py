"""An RTSP camera's alert recording is the camera's own bitstream: remuxed, never re-encoded.

A second client (PyAV, beside `serve`) reads the same GStreamer RTSP mount; both get the one shared encoder's
packets. Every coded slice (H.264 NAL units 1 and 5) of the recording must be one that camera sent."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import av
import pytest

from engines.registry import DEFAULT_MODEL, build_engine
from stream.config.serve import ServeConfig
from stream.live.sources.live import SourceConfig
from stream.messages import WIRE

from support.shared import FFPP, MESONET_WEIGHTS
from support.live_server import LiveServer
from support.parts import require
from support.rtsp_server import GOP_S, RtspServer, unavailable_reason
from test_evidence_recording import (ALERT_TIMEOUT_S, END_TIMEOUT_S, PRE_S, avcc_nals, is_alert, slice_hashes,
                                     wait_for)


def annexb_nals(data: bytes) -> list[bytes]:
    out, i, n = [], 0, len(data)
    starts = []
    while (j := data.find(b"\x00\x00\x01", i)) != -1:
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else n
        out.append(data[s:end].rstrip(b"\x00"))  # a 4-byte start code leaves its leading zero behind
    return out


def slice_hashes_annexb(data: bytes) -> list[str]:
    return slice_hashes(annexb_nals(data))


class CameraClient(threading.Thread):
    """Reads the RTSP mount alongside serve and keeps the hash of every slice it receives."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.hashes, self.stop = url, set(), threading.Event()

    def run(self) -> None:
        with av.open(self.url, options={"rtsp_transport": "tcp"}, timeout=10) as c:
            for p in c.demux(video=0):
                if self.stop.is_set():
                    break
                if p.size:
                    self.hashes.update(slice_hashes_annexb(bytes(p)))


@pytest.mark.slow
def test_rtsp_recording_is_the_cameras_own_bitstream(tmp_path):
    require("GStreamer's RTSP server", unavailable_reason())
    engine = build_engine(DEFAULT_MODEL, weights_dir=MESONET_WEIGHTS, allow_download=False)
    with RtspServer(FFPP / "fake" / "Deepfakes_519_515.mp4") as camera:
        client = CameraClient(camera.url)
        client.start()
        config = ServeConfig(port=0, data_dir=tmp_path, sources=[SourceConfig(name="cam", url=camera.url)])
        msgs: list[dict] = []
        with LiveServer(config, [engine]) as server:
            server.service.bus.subscribe(WIRE, msgs.append, wire=True)
            start = wait_for(msgs, is_alert("start"), ALERT_TIMEOUT_S)
            assert start is not None, "no alert from the Deepfakes camera"
            time.sleep(2.0)
            server.service.remove("cam")
            end = wait_for(msgs, lambda m: is_alert("end")(m) and m["id"] == start["id"], END_TIMEOUT_S)
        client.stop.set()
        client.join(15)
    assert end is not None and end["evidence"]["recording_state"] == "complete"
    assert end["custody"]["source"] == camera.url and end["custody"]["remuxed"] is True
    with av.open(end["evidence"]["recording"]) as rec:
        recorded = [h for p in rec.demux(video=0) if p.size for h in slice_hashes(avcc_nals(bytes(p)))]
        v = rec.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (640, 480)
    assert len(recorded) > 25, "the recording holds under a second of slices"
    foreign = [h for h in recorded if h not in client.hashes]
    assert not foreign, f"{len(foreign)} of {len(recorded)} slices were not the camera's (re-encoded?)"
    # its pre-roll: the ring's seconds before the first frame judged fake, give or take one camera GOP
    track = json.loads(Path(end["evidence"]["overlay"]).read_text())
    first_overlay = min(m["time"] for m in msgs if m.get("type") == "overlay" and m["stream"] == "cam")
    first_fake = track["first_fake"] + track["clip_start_source_time"]
    assert track["first_fake"] >= min(PRE_S, first_fake - first_overlay) - GOP_S - 0.1
    assert track["first_fake"] <= PRE_S + GOP_S + 0.1  # and no more than that (the ring keeps keep_s + slack)


def test_recording_from_a_connections_first_keyframe_opens(tmp_path):
    """A recording that starts at the very first keyframe of an RTSP connection opens and decodes: FFmpeg gives
    that connection's first packet no timestamp (it is left out of the ring), and every keyframe carries its
    parameter sets in-band (a camera may send them only in the SDP)."""
    require("GStreamer's RTSP server", unavailable_reason())
    from stream.live.evidence.mp4 import RemuxWriter
    from stream.live.sources import AVSource
    from stream.live.sources.annexb import has_parameter_sets, nal_types, random_access

    got = []
    with RtspServer(FFPP / "real" / "004.mp4") as camera:
        src = AVSource(camera.url, options={"rtsp_transport": "tcp"}, strict_length=False, timeout=10,
                       on_packet=got.append)
        for frame in src.frames():
            if frame.time > 2.5:
                break
        src.close()
    keys = [p for p in got if p.keyframe]
    assert keys, "no keyframe in 2.5 s of a camera with a 1 s GOP"
    for p in keys:
        types = nal_types(p.data, "h264")
        assert random_access(types, "h264") and has_parameter_sets(types, "h264"), types
    first = got.index(keys[0])
    writer = RemuxWriter(tmp_path / "r.mp4", keys[0].codec, keys[0])
    for p in got[first:]:
        writer.write(p)
    writer.close()
    with av.open(str(tmp_path / "r.mp4")) as rec:
        assert sum(1 for _ in rec.decode(video=0)) >= len(got[first:]) - 2
