"""A real RTSP server on loopback for the live-source tests: Debian's gst-rtsp-server looping a shared video.

Why GStreamer: gst-rtsp-server is a complete RTSP server (DESCRIBE/SETUP/PLAY, TCP interleaved and UDP,
many clients per mount) packaged in Debian; ffmpeg's `-rtsp_flags listen` only receives a stream, it cannot
serve one. The project venv cannot see Debian's python3-gi, so `RtspServer` runs the GStreamer side
(`support/rtsp_gst.py`) as a child process of the SYSTEM python: `kill()` is a real SIGKILL, like a camera or
relay crashing, and `restart()` brings it back on the same port and path.
"""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path

import pytest

from support import rtsp_gst
from support.rtsp_gst import GOP_S  # noqa: F401  (the keyframe interval clients wait at most; tests import it here)
from support.parts import require
from support.subprocess_server import HOST, SubprocessServer, free_port  # noqa: F401  (tests import free_port here)

SYSTEM_PYTHON = os.environ.get("DFSTREAM_GST_PYTHON", "/usr/bin/python3")  # the python that sees python3-gi
SCRIPT = rtsp_gst.__file__
DEFAULT_PATH = "live"
READY_LINE = rtsp_gst.READY_LINE
START_TIMEOUT_S = 20.0
CHECK_TIMEOUT_S = 20.0
# Debian packages that provide GStreamer's side (scripts/setup.sh test installs them).
DEBIAN_PACKAGES = (
    "python3-gi", "gir1.2-gst-rtsp-server-1.0", "gstreamer1.0-plugins-base", "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad", "gstreamer1.0-plugins-ugly", "gstreamer1.0-libav",
)  # fmt: skip

_unavailable: list[str | None] = []  # memo of unavailable_reason()


def unavailable_reason() -> str | None:
    """None when the system python can run the server, else why not (for pytest.skip). Checked once."""
    if not _unavailable:
        reason = None
        if not Path(SYSTEM_PYTHON).exists():
            reason = f"{SYSTEM_PYTHON} not found"
        else:
            done = subprocess.run(
                [SYSTEM_PYTHON, "-I", SCRIPT, "--check"], capture_output=True, text=True, timeout=CHECK_TIMEOUT_S
            )
            if done.returncode:
                reason = (done.stderr.strip().splitlines() or ["check failed"])[-1]
        if reason:
            reason = f"gst-rtsp-server unavailable ({reason}); install: {' '.join(DEBIAN_PACKAGES)}"
        _unavailable.append(reason)
    return _unavailable[0]


class RtspServer(SubprocessServer):
    """gst-rtsp-server in a child process streaming `video` (and `audio`, a WAV, if given) in a loop at
    rtsp://127.0.0.1:PORT/PATH.

    `start()` returns once a client can connect (the child printed its ready line); `kill()` (also `stop()`)
    kills it abruptly; `restart()` is kill + start on the same port and path. Also a context manager. The child
    also exits when this process dies (it watches its stdin pipe), so a crashed test run leaves no server behind.
    """

    name = "rtsp-server"
    start_timeout_s = START_TIMEOUT_S

    def __init__(self, video: str | Path, port: int | None = None, path: str = DEFAULT_PATH,
                 audio: str | Path | None = None):
        super().__init__(port)
        self.video = Path(video)
        self.audio = Path(audio) if audio is not None else None  # a WAV: the camera's microphone, sent as AAC
        self.path = path.strip("/")
        self.url = f"rtsp://{HOST}:{self.port}/{self.path}"
        self.log_file = None  # the child's stderr, open while it runs

    @property
    def pid(self) -> int | None:
        """The GStreamer server's own process id while it runs (a test may SIGSTOP it: a frozen camera)."""
        return self.proc.pid if self.running else None

    def command(self) -> list[str]:
        return [SYSTEM_PYTHON, "-I", SCRIPT, str(self.video), str(self.port), self.path,
                *([str(self.audio)] if self.audio is not None else [])]

    def stdio(self) -> dict:
        self.log_file = open(self.workdir / "log", "w")  # noqa: SIM115  (closed by kill())
        return {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": self.log_file, "text": True}

    def answers(self) -> bool:
        if select.select([self.proc.stdout], [], [], 0.1)[0]:
            return self.proc.stdout.readline().strip() == READY_LINE
        return False

    def kill(self) -> None:
        super().kill()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def log_tail(self, lines: int = 40) -> str:
        log = self.workdir / "log"
        return "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def __del__(self) -> None:
        if getattr(self, "proc", None) is not None:
            self.kill()


@pytest.fixture
def rtsp_server(ffpp):
    """A started RtspServer looping the first real FF++ video; skips where gst-rtsp-server is missing.

    Other test modules use it with `from support.rtsp_server import rtsp_server  # noqa: F401`.
    """
    require("GStreamer's RTSP server", unavailable_reason())
    with RtspServer(sorted((ffpp / "real").glob("*.mp4"))[0]) as server:
        yield server
