"""Reading H.264/HEVC Annex B packets just enough to keep a recording decodable from its first packet: which
NAL unit types a packet holds, whether it is a random-access point, whether it carries its parameter sets.

Why: a recording may start at any keyframe the ring holds, long after the stream's extradata was sent (an RTSP
camera puts its SPS/PPS in the SDP, and FFmpeg flags the first packet of a connection as a keyframe whatever it
holds). A packet is a GOP start only if it holds an IDR/IRAP picture, and one without in-band parameter sets gets
the stream's own prepended, as FFmpeg's `h264_mp4toannexb` does for MP4 input.
"""

from __future__ import annotations

START = b"\x00\x00\x01"
H264_SPS, H264_PPS, H264_IDR = 7, 8, 5
HEVC_VPS, HEVC_SPS, HEVC_PPS = 32, 33, 34
HEVC_IRAP = range(16, 24)


def is_annexb(data: bytes) -> bool:
    return data.startswith(START) or data.startswith(b"\x00" + START)


def nal_types(data: bytes, codec: str) -> list[int]:
    types, i = [], 0
    while (j := data.find(START, i)) != -1 and j + 3 < len(data):
        header = data[j + 3]
        types.append(header & 0x1F if codec == "h264" else (header >> 1) & 0x3F)
        i = j + 3
    return types


def random_access(types: list[int], codec: str) -> bool:
    return H264_IDR in types if codec == "h264" else any(t in HEVC_IRAP for t in types)


def has_parameter_sets(types: list[int], codec: str) -> bool:
    if codec == "h264":
        return H264_SPS in types and H264_PPS in types
    return HEVC_SPS in types and HEVC_PPS in types
