"""Source settings: addresses and their kinds, reconnect back-off, and the buffer's overflow policy."""

from __future__ import annotations

import random
from enum import Enum
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

RTSP_SCHEMES = ("rtsp://", "rtsps://")
DEVICE_PREFIXES = ("/dev/video",)
NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "http", "https", "srt", "udp", "tcp"})


def is_network(url: str) -> bool:
    return urlsplit(url).scheme.lower() in NETWORK_SCHEMES


class BufferPolicy(str, Enum):
    """What a full buffer does with a new frame.

    DROP_OLDEST: live sources. Decoding never waits for inference; the oldest frame is dropped and counted.
    WAIT: unpaced files. The decoder waits for the consumer, so every frame is analysed and none is lost.
    """

    DROP_OLDEST = "drop-oldest"
    WAIT = "wait"


class Backoff(BaseModel):
    """Reconnect delays: exponential, capped, with jitter so many cameras that fail together do not retry in
    step."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_s: float = Field(default=0.25, gt=0, description="delay before the first retry")
    factor: float = Field(default=2.0, ge=1.0, description="each further retry waits this many times longer")
    max_s: float = Field(default=2.0, gt=0, description="cap: a returning camera is picked up within this")
    jitter: float = Field(default=0.2, ge=0.0, le=1.0, description="± fraction of the delay drawn at random")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before reconnect attempt `attempt` (0-based)."""
        base = min(self.max_s, self.initial_s * self.factor ** attempt)
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))


class SourceConfig(BaseModel):
    """One camera or file. `watchdog_s`: a source with no frame for that long is restarted."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$",
                      description="the stream's name in the page, the API, messages and topics")
    url: str = Field(min_length=1, description="rtsp:// or rtsps:// camera, video file or /dev/videoN; "
                     "${VAR} keeps a password out of the file")
    loop: bool = Field(default=False, description="replay a file from the start when it ends (demos)")
    pace: bool = Field(default=True, description="play files at their real frame rate (else as fast as decoded)")
    rtsp_transport: str = Field(default="tcp", pattern="^(tcp|udp|http|https)$",
                                description="RTSP transport: tcp retransmits what a lossy network drops, udp does not")
    watchdog_s: float = Field(default=10.0, gt=0, description="a source with no frame for this long reconnects")
    analysed_fps: float = Field(default=5.0, gt=0, le=60, description="frames a second scored (the display "
                                "keeps the source's own rate); lowered together under load")
    backoff: Backoff = Field(default=Backoff(), description="delays between reconnect attempts")
    device_format: str = Field(default="v4l2", description="FFmpeg input format of /dev/videoN devices")
    convert: Literal["on-take", "on-decode"] = Field(
        default="on-take", description="when decoded frames become RGB. on-take: only the frames the scheduler "
        "takes, on its threads, scaled for detection in the same step (display-only frames never are); on-decode: "
        "every frame on the decoder thread (the path before issue 25, kept to compare against)")
    detection: Literal["camera", "screen"] = Field(
        default="camera", description="how faces are searched for: camera (the detector's own settings) or screen "
        "(a captured screen or call grid: small faces in a large picture, stream/config/faces.py SCREEN)")
    priority: int = Field(
        default=0, ge=-100, le=100, description="under load, a stream with a higher priority keeps its analysed rate "
        "longer and is paused later (stream/live/scheduler/governor.py); a stream someone is watching (a browser's "
        "webcam or shared screen, a camera with relay viewers) comes before any priority. Changeable at run time: "
        "POST /api/streams/NAME/priority")
    baseline: Path | None = Field(
        default=None, description="a camera baseline file (dfstream baseline): judge this stream with the bar learned "
        "from its own real footage instead of the global one; refused at start if learned with other models, "
        "weights or calibration, or at another analysed_fps. A baseline learned live (POST "
        "/api/streams/NAME/baseline) takes its place")
    voice_baseline: Path | None = Field(
        default=None, description="a voice baseline file (dfstream baseline --modality voice): judge this stream's "
        "voice with the bar learned from its own real speech instead of voice.verdict's; refused at start if learned "
        "with other voice models or weights, or at another voice.hop_s, or if no voice.models run. A voice "
        "baseline learned live takes its place")

    @property
    def kind(self) -> str:
        if self.url.startswith(RTSP_SCHEMES):
            return "rtsp"
        if self.url.startswith(DEVICE_PREFIXES):
            return "device"
        if is_network(self.url):
            return "network"
        return "file"

    @property
    def policy(self) -> BufferPolicy:
        return BufferPolicy.WAIT if self.kind == "file" and not self.pace else BufferPolicy.DROP_OLDEST


class SourcePolicy(BaseModel):
    """What an address sent through the API (`POST /api/streams`) may be. The config file and the command line
    are trusted and not checked against it. See `stream.live.server.auth.check_api_source` for the rules."""

    model_config = ConfigDict(extra="forbid")

    allow_http: bool = Field(default=False, description="accept http:// and https:// sources from the API")
    allowed_paths: list[str] = Field(
        default=[], description="folders under which local files and devices (/dev/videoN) may be added through "
        "the API; none by default")
    allowed_addresses: list[str] = Field(
        default=[], description="link-local or metadata addresses, networks (CIDR) or host names the API may "
        "add cameras at anyway (169.254.0.0/16 and fe80::/10 are refused otherwise)")
