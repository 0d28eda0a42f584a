"""Is anyone speaking? Silero VAD per 32 ms frame, and the gate that keeps windows without speech from being judged.

Why silero-vad: a small neural detector (about 2 MB, shipped inside its wheel: no download, runs offline) on ONNX
Runtime, which the project already uses. Energy and GMM detectors (WebRTC's VAD) fire on music and steady tones,
which would then be judged as voices; anti-spoofing models trained on speech only give meaningless scores there.
Only its ONNX model and `OnnxWrapper.audio_forward` are used (no torchaudio, no file I/O of its own).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.config.voices import VoicedPolicy

VAD_RATE = 16000
VAD_FRAME = 512  # silero's frame at 16 kHz (32 ms)


@dataclass(frozen=True, slots=True)
class Voicing:
    """Per VAD frame of a clip: was it speech. `fraction(start, end)` over the frames inside a sample span."""

    speech: np.ndarray  # bool, one per VAD_FRAME samples

    def fraction(self, start: int, end: int) -> float:
        first, last = start // VAD_FRAME, max(start // VAD_FRAME + 1, -(-end // VAD_FRAME))
        frames = self.speech[first:last]
        return float(frames.mean()) if len(frames) else 0.0


class SpeechDetector:
    """Silero VAD on ONNX Runtime (one thread: it is tiny, and leaves the cores to the engines)."""

    def __init__(self, policy: VoicedPolicy | None = None) -> None:
        import torch

        threads = torch.get_num_threads()
        import silero_vad  # its import sets torch's global thread count to 1: give the engines theirs back

        torch.set_num_threads(threads)
        self.policy = policy or VoicedPolicy()
        self.model = silero_vad.load_silero_vad(onnx=True)

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Speech probability per VAD frame of a 16 kHz mono clip (the last frame zero-padded)."""
        import torch

        if len(samples) == 0:
            return np.zeros(0, np.float32)
        out = self.model.audio_forward(torch.from_numpy(np.ascontiguousarray(samples, np.float32)), VAD_RATE)
        return out.numpy().reshape(-1)

    def voicing(self, samples: np.ndarray) -> Voicing:
        return Voicing(self.probabilities(samples) > self.policy.speech_threshold)

    def reason(self, fraction: float) -> str | None:
        """Why a window with this voiced fraction is not judged; None when it is speech enough."""
        if fraction >= self.policy.min_voiced_fraction:
            return None
        return f"no speech ({fraction:.0%} of the window voiced, under {self.policy.min_voiced_fraction:.0%})"
