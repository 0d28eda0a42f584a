"""The recording's continuous clock and clean ends, on real H.264 with B-frames (made here with PyAV, demuxed by
the real source code): a file's loops, a camera restarting or jumping its timestamps within one connection, and a
recording cut anywhere in decode order all remux to one MP4 whose frames rise one frame apart, without a hole."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import av
import numpy as np

from stream.live.evidence.mp4 import RemuxWriter
from stream.live.evidence.ring import PacketRing
from stream.live.evidence.timeline import Timeline
from stream.live.sources import AVSource

FPS = 25
FRAMES = 50  # 2 s
GOP = 25


def make_bframe_video(path, frames: int = FRAMES) -> None:
    """H.264 with two B-frames between references (decode order differs from display order)."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        s.options = {"preset": "ultrafast",
                     "x264-params": f"bframes=2:b-adapt=0:keyint={GOP}:min-keyint={GOP}:scenecut=0"}
        for i in range(frames):
            img = np.full((240, 320, 3), (i * 5) % 255, np.uint8)
            img[:, (i * 6) % 320] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def connection(path) -> list:
    """One connection's packets, as the live source taps them (a new CodecInfo each time)."""
    got: list = []
    src = AVSource(path, on_packet=got.append)
    for _ in src.frames():
        pass
    return got


def remux(tmp_path, packets, name="clip.mp4") -> list[float]:
    """Write `packets` (from the first keyframe) with the recorder's writer; the decoded frames' times."""
    start = next(i for i, p in enumerate(packets) if p.keyframe)
    writer = RemuxWriter(tmp_path / name, packets[start].codec, packets[start])
    for p in packets[start:]:
        writer.write(p)
    writer.close()
    with av.open(str(tmp_path / name)) as rec:
        return [float(f.time) for f in rec.decode(video=0)]


def steps(times: list[float]) -> set[float]:
    return {round(b - a, 4) for a, b in zip(times, times[1:])}


def test_a_looped_file_remuxes_to_one_clip_on_a_rising_clock(tmp_path):
    path = tmp_path / "loop.mp4"
    make_bframe_video(path)
    timeline, ring = Timeline(), PacketRing(keep_s=60.0, max_bytes=64 << 20)
    first, second, third = connection(path), connection(path), connection(path)  # the file played three times
    assert first[0].codec is not second[0].codec and first[1].pts != first[1].dts  # new records, B-frames
    for i, packet in enumerate(first + second + third):
        ring.push(timeline.rebase(packet, arrived=i / FPS))
    assert ring.resets == 0  # same shape: the ring (and an open recording) goes on through each loop
    times = remux(tmp_path, ring.packets_since(-1.0))
    assert len(times) == 3 * FRAMES
    assert steps(times) == {round(1 / FPS, 4)}  # one frame apart throughout, across both loops
    breaks = timeline.breaks(-1.0, 1e9)
    assert [b.reason for b in breaks] == ["new connection"] * 2
    assert [round(b.at, 4) for b in breaks] == [FRAMES / FPS, 2 * FRAMES / FPS]
    # a frame's own time (it restarts at each loop) maps onto the clip's clock through its loop
    assert timeline.continuous(0.4) == 2 * FRAMES / FPS + 0.4


def test_a_camera_that_restarts_or_jumps_its_timestamps_keeps_one_clip(tmp_path):
    path = tmp_path / "cam.mp4"
    make_bframe_video(path)
    packets = connection(path)
    codec, tb = packets[0].codec, Fraction(packets[0].codec.time_base)
    hour = int(3600 / tb)
    # one connection: the clock restarts at 0 (a camera rebooting its encoder), then leaps an hour ahead
    restarted = [dataclasses.replace(p, codec=codec) for p in packets]
    leapt = [dataclasses.replace(p, codec=codec, pts=p.pts + hour, dts=p.dts + hour) for p in packets]
    timeline = Timeline()
    out = [timeline.rebase(p, arrived=i / FPS) for i, p in enumerate(packets + restarted + leapt)]
    assert [b.reason for b in timeline.breaks(-1.0, 1e9)] == ["timestamps went back", "timestamps jumped ahead"]
    times = remux(tmp_path, out)
    assert len(times) == 3 * FRAMES and steps(times) == {round(1 / FPS, 4)}
    assert all(p.codec is codec for p in out)


def test_a_file_read_faster_than_real_time_is_no_jump(tmp_path):
    path = tmp_path / "fast.mp4"
    make_bframe_video(path)
    timeline = Timeline()
    for p in connection(path):  # every packet "arrives" at once: media time outruns the wall clock
        timeline.rebase(p, arrived=0.0)
    assert timeline.breaks(-1.0, 1e9) == []


def test_a_clip_cut_inside_a_group_of_b_frames_ends_without_a_hole(tmp_path):
    path = tmp_path / "cut.mp4"
    make_bframe_video(path)
    packets = connection(path)
    # cut right after a reference frame and the first B-frame shown before it: the second never came
    refs = [i for i, p in enumerate(packets[:-2]) if i > FRAMES // 2 and packets[i + 1].pts < p.pts
            and packets[i + 2].pts < p.pts]  # a reference frame followed by its two B-frames
    cut = refs[0] + 2
    times = remux(tmp_path, packets[:cut])
    assert times and steps(times) == {round(1 / FPS, 4)}  # no hole before a last frame
    assert len(times) >= cut - 3  # at most the cut group (its reference and one B-frame) left out
