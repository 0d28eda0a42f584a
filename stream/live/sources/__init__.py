"""Where frames come from: every source decodes with PyAV and reports an explicit state."""

from typing import TYPE_CHECKING

from stream.live.sources.base import AudioChunk, AudioCodecInfo, CodecInfo, Frame, Packet, SourceError, SourceState

if TYPE_CHECKING:
    from stream.live.sources.av_source import AVSource


def __getattr__(name: str):
    """`AVSource` on first use: the frame records (`base`, `picture`) import without PyAV, which the detector and
    crops need where PyAV is absent (benchmarks/gpu_check.py on a GPU machine)."""
    if name == "AVSource":
        from stream.live.sources.av_source import AVSource

        return AVSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["AVSource", "AudioChunk", "AudioCodecInfo", "CodecInfo", "Frame", "Packet", "SourceError", "SourceState"]
