"""Where frames come from: every source decodes with PyAV and reports an explicit state."""

from stream.live.sources.base import AudioChunk, AudioCodecInfo, CodecInfo, Frame, Packet, SourceError, SourceState
from stream.live.sources.av_source import AVSource

__all__ = ["AVSource", "AudioChunk", "AudioCodecInfo", "CodecInfo", "Frame", "Packet", "SourceError", "SourceState"]
