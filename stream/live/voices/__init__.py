"""Sound in: a file's (or later a stream's) audio decoded to 16 kHz mono float32, cut into each voice engine's
windows, gated by a voice activity detector, and scored by the voice engines. Pure functions and frozen records,
so the offline scan and a live audio ring use the same pieces."""

from stream.live.voices.decode import Audio, NoAudioTrack, decode_audio
from stream.live.voices.scoring import VoiceScorer, WindowScore
from stream.live.voices.vad import SpeechDetector, VoicedPolicy
from stream.live.voices.windows import Window, cut_windows

__all__ = ["Audio", "NoAudioTrack", "SpeechDetector", "VoiceScorer", "VoicedPolicy", "Window", "WindowScore",
           "cut_windows", "decode_audio"]
