"""The recording ring: cut at keyframes, covering its seconds, and its byte cap holding on a high-bitrate source
(a real H.264 file made here with PyAV, demuxed by the real source code)."""

from __future__ import annotations


import av
import numpy as np
import pytest

from stream.config.evidence import EvidencePolicy
from stream.live.evidence.encoder import FrameEncoder
from stream.live.evidence.ring import PacketRing
from stream.live.sources import AVSource, Frame

from support.shared import FFPP

FPS = 25


def make_video(path, seconds: float, gop: int, noise: bool, size=(320, 240)) -> None:
    """H.264 at `gop` frames per keyframe; noise frames at qp 0 make a very high bitrate (~100 KB a frame)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = *size, "yuv420p"
        s.options = {"preset": "ultrafast", "qp": "0" if noise else "30",
                     "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for i in range(int(seconds * FPS)):
            img = rng.integers(0, 255, (size[1], size[0], 3), np.uint8) if noise else \
                np.full((size[1], size[0], 3), i % 255, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


class Watched(PacketRing):
    """The real ring, remembering the most memory it ever held after a push."""

    peak = 0

    def push(self, packet):
        super().push(packet)
        self.peak = max(self.peak, self.bytes)


def feed(path, ring) -> list:
    got = []
    src = AVSource(path, on_packet=lambda p: (got.append(p), ring.push(p)))
    for _ in src.frames():
        pass
    return got


def test_byte_cap_holds_on_a_high_bitrate_source(tmp_path):
    path = tmp_path / "noise.mp4"
    make_video(path, seconds=4, gop=FPS // 2, noise=True)
    cap = 3 << 20
    ring = Watched(keep_s=60.0, max_bytes=cap)  # seconds would keep everything: only the cap limits it
    packets = feed(path, ring)
    total = sum(p.size for p in packets)
    assert total > 3 * cap, "the source is not high-bitrate enough to test the cap"
    assert ring.peak <= cap, (ring.peak, cap)
    held = ring.packets_since(0.0)
    assert held and held[0].keyframe and ring.bytes > cap // 4  # still holds what fits, from a keyframe
    # a GOP bigger than the whole cap leaves nothing rather than overflowing
    small = Watched(keep_s=60.0, max_bytes=max(p.size for p in packets) * 2)
    feed(path, small)
    assert small.peak <= small.max_bytes and small.overflows > 0


def test_ring_is_cut_at_keyframes_and_covers_its_seconds(tmp_path):
    path = tmp_path / "flat.mp4"
    make_video(path, seconds=8, gop=FPS, noise=False)  # a keyframe each second
    ring = PacketRing(keep_s=3.0, max_bytes=64 << 20)
    packets = feed(path, ring)
    held = ring.packets_since(-1.0)
    newest = max(p.time for p in packets)
    assert held[0].keyframe
    assert held[0].time <= newest - 3.0 < held[0].time + 1.0 + 1e-6  # covers 3 s, by at most one GOP more
    since = ring.packets_since(newest - 2.5)
    assert since[0].keyframe and since[0].time <= newest - 2.5
    st = ring.status()
    assert st["bytes"] == sum(p.size for p in held) and st["codec"] == "h264"


def test_ring_resets_when_the_source_reconnects(tmp_path):
    path = tmp_path / "flat.mp4"
    make_video(path, seconds=2, gop=FPS, noise=False)
    ring = PacketRing(keep_s=10.0, max_bytes=64 << 20)
    resets = []
    first = feed(path, ring)
    ring.follow(0.0, lambda p: None, lambda: resets.append(1))
    feed(path, ring)  # a new connection: a new CodecInfo, timestamps from 0 again
    assert ring.resets == 1 and resets == [1]
    assert len(ring.packets_since(-1.0)) == len(first)


def test_encoder_makes_decodable_keyframed_packets_for_frame_only_sources():
    ring = PacketRing(keep_s=2.0, max_bytes=16 << 20)
    enc = FrameEncoder("cam", ring.push)
    with av.open(str(FFPP / "fake" / "Deepfakes_519_515.mp4")) as src:
        for i, vf in enumerate(src.decode(video=0)):
            if i >= 75:
                break
            enc.submit(Frame(vf.to_ndarray(format="rgb24"), vf.pts, float(vf.time), i, 0.0))
            if enc.pending > 4:  # let the worker keep up (a real source drops instead)
                import time

                time.sleep(0.02)
    enc.close()
    held = ring.packets_since(-1.0)
    assert held and held[0].keyframe and held[0].codec.codec == "h264"
    assert held[-1].time - held[0].time <= 2.0 + 1.0 + 1e-6  # keep_s plus at most one encoder GOP
    ctx = av.CodecContext.create("h264", "r")
    frames = [f for p in held for f in ctx.decode(av.Packet(p.data))]
    assert frames and (frames[0].width, frames[0].height) == (640, 480)


def test_policy_refuses_a_clip_shorter_than_its_preroll_and_unknown_keys():
    with pytest.raises(ValueError, match="max_clip_s"):
        EvidencePolicy(pre_capture_s=10, max_clip_s=5)
    with pytest.raises(ValueError):
        EvidencePolicy(pre_capture=5)
    assert EvidencePolicy().pre_capture_s == 5 and EvidencePolicy().post_capture_s == 5
