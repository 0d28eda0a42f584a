"""Voice settings for `serve`: which voice engines judge each stream's sound, how often, the speech gate, the voice
verdict's own hysteresis and thresholds, and the rule that fuses face and voice verdicts into the stream's."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from stream.config.verdicts import VerdictPolicy

# The stream verdict's rule (named policies; `VoiceConfig.rule`):
# - "either": the stream is as bad as the worse of its faces and its voice, and a fake voice raises an alert of its
#   own, as a fake face does, each at its own thresholds. Catches a swapped face behind a real voice and a cloned
#   voice behind a real face; costs the false alarms of both detectors added up (the voice detectors here call
#   much real speech fake: docs/voices.md).
# - "faces-only": the voice is judged and shown, and never changes the stream's verdict or raises an alert. No
#   voice false alarms, no voice detection: for deployments that want to watch the voice scores before trusting
#   them.
# There is no "both" rule (fake only when face and voice agree): it would silence the commonest live fake, a
# swapped face with the caller's own voice.
StreamRule = Literal["either", "faces-only"]


class VoicedPolicy(BaseModel):
    """When a window counts as speech.

    `speech_threshold`: silero's own default for a frame's speech probability; lower lets breathy or noisy speech
    through but also music with vocals-like timbre. `min_voiced_fraction`: the share of a window's frames that must
    be speech. A quarter of a 4 s window is about one second of voice, enough for a detector to judge, while a word
    or two inside music or silence stays `low-quality`; higher drops windows of slow speech with long pauses.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    speech_threshold: float = Field(default=0.5, gt=0.0, lt=1.0, description="a frame is speech above this "
                                    "silero probability")
    min_voiced_fraction: float = Field(default=0.25, gt=0.0, le=1.0, description="share of a window's frames that "
                                       "must be speech for the window to be judged")


# The voice verdict's defaults. Windows come every `hop_s` at best (every 3-4 s on a loaded 2-core CPU), so the
# median runs over 3 windows and 2 in a row decide: a voice turns fake after about 4-8 s of fake speech, where
# faces (5 analysed fps, median of 9, k 3) take about 2 s. The bar is higher than the faces' 0.7: AASIST's raw
# p(fake) sits high on real speech recorded outside ASVspoof (docs/voices.md: median real file 0.81), so 0.7 would
# call most real voices fake; 0.9 still calls some real speech fake until a calibration is fitted.
VOICE_VERDICT = VerdictPolicy(window=3, k=2, t_high=0.9, t_low=0.5)


class VoiceConfig(BaseModel):
    """The live voice path. With no `models`, sound is neither decoded nor judged (nothing runs)."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default=[], description="voice engines judging every stream's sound, fused per "
                              "window (`dfstream models list`: aasist, aasist-l, ...); empty: sound is not judged")
    calibration: list[Path] = Field(default=[], description="calibration maps for the voice engines (the faces' "
                                    "format); WEIGHTS.calibration.json beside a voice model's weights is found too")
    hop_s: float = Field(default=2.0, gt=0, le=60, description="seconds of new sound before a stream's next window "
                         "is scored (windows are each engine's length, about 4 s); a scorer that is behind skips "
                         "to the newest window")
    threads: int = Field(default=1, ge=1, description="intra-op threads of the voice thread's engines (torch): the "
                         "face loop keeps the other cores")
    speech: VoicedPolicy = Field(default=VoicedPolicy(), description="when a window holds enough speech to judge")
    verdict: VerdictPolicy = Field(default=VOICE_VERDICT, description="smoothing, hysteresis and thresholds of "
                                   "each stream's voice verdict (its own, apart from the faces')")
    rule: StreamRule = Field(default="either", description="how face and voice verdicts make the stream's: "
                             "either (the worse of the two; a fake voice alerts) or faces-only (the voice is shown, "
                             "never alerts)")
    lost_after_s: float = Field(default=10.0, gt=0, description="a stream whose sound stops this long ends its voice "
                                "alert, and its voice verdict starts afresh when sound returns")
