"""A stream's verdict from its faces' and its voice's: the rule (`voice.rule`, stream/config/voices.py has the named
policies and their trade-offs) in one pure function, and what the scheduler asks of the voice path."""

from __future__ import annotations

from typing import Protocol

from stream.live.verdicts.policy import SEVERITY
from stream.messages import StreamVerdicts, VoiceOverlay


class Voices(Protocol):
    """The voice path as the scheduler sees it (stream.live.voices.live.VoiceLoop)."""

    def overlay(self, name: str) -> VoiceOverlay | None: ...

    def verdict(self, name: str) -> str | None: ...


def stream_verdict(face: str | None, voice: str | None, rule: str) -> str | None:
    """"either": the more severe of the two (fake > uncertain > real; a missing one does not count);
    "faces-only": the faces' alone."""
    if rule == "faces-only":
        return face
    if rule != "either":
        raise ValueError(f"unknown stream rule {rule!r}")
    present = [v for v in (face, voice) if v is not None]
    return max(present, key=SEVERITY.__getitem__) if present else None


def side_by_side(face: str | None, voice: str | None, rule: str) -> StreamVerdicts:
    return StreamVerdicts(face=face, voice=voice, stream=stream_verdict(face, voice, rule), rule=rule)
