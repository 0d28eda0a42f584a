"""A real RTSP server on loopback for the live-source tests: Debian's gst-rtsp-server looping a shared video.

Why GStreamer: gst-rtsp-server is a complete RTSP server (DESCRIBE/SETUP/PLAY, TCP interleaved and UDP,
many clients per mount) packaged in Debian; ffmpeg's `-rtsp_flags listen` only receives a stream, it cannot
serve one. The project venv cannot see Debian's python3-gi, so this file is two things:

* imported by the tests (any Python): `RtspServer` runs the server as a child process of the SYSTEM
  python, so `stop()` is a real SIGKILL, like a camera or relay crashing, and `restart()` brings it back
  on the same port and path;
* run as a script by that system python (`main()`): the GStreamer side.

How the video loops like a live camera: a producer pipeline decodes the file at its real frame rate into an
`intervideosink` and rewinds with segment seeks (running time keeps growing, so pacing never jumps). The
shared RTSP media reads `intervideosrc`, re-encodes with x264 at zero latency and a one-second GOP, so a
client that joins at any moment gets a keyframe within a second and then frames at real time.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEM_PYTHON = os.environ.get("DFSTREAM_GST_PYTHON", "/usr/bin/python3")  # the python that sees python3-gi
HOST = "127.0.0.1"
DEFAULT_PATH = "live"
READY_LINE = "READY"  # printed by the server once the port listens and the first frame is decoded
START_TIMEOUT_S = 20.0
CHECK_TIMEOUT_S = 20.0
CHANNEL = "dfstream-rtsp-test"  # intervideo channel linking producer and RTSP media (per process)
GOP_S = 1  # keyframe interval in seconds: the longest a joining client waits for a decodable frame
BITRATE_KBPS = 2000
REQUIRED_ELEMENTS = (
    "filesrc", "qtdemux", "h264parse", "avdec_h264", "videoconvert",
    "intervideosink", "intervideosrc", "x264enc", "rtph264pay",
)  # fmt: skip
# Debian packages that provide the above (scripts/setup.sh test installs them).
DEBIAN_PACKAGES = (
    "python3-gi", "gir1.2-gst-rtsp-server-1.0", "gstreamer1.0-plugins-base", "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad", "gstreamer1.0-plugins-ugly", "gstreamer1.0-libav",
)  # fmt: skip

_unavailable: list[str | None] = []  # memo of unavailable_reason()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def unavailable_reason() -> str | None:
    """None when the system python can run the server, else why not (for pytest.skip). Checked once."""
    if not _unavailable:
        reason = None
        if not Path(SYSTEM_PYTHON).exists():
            reason = f"{SYSTEM_PYTHON} not found"
        else:
            done = subprocess.run(
                [SYSTEM_PYTHON, "-I", __file__, "--check"], capture_output=True, text=True, timeout=CHECK_TIMEOUT_S
            )
            if done.returncode:
                reason = (done.stderr.strip().splitlines() or ["check failed"])[-1]
        if reason:
            reason = f"gst-rtsp-server unavailable ({reason}); install: {' '.join(DEBIAN_PACKAGES)}"
        _unavailable.append(reason)
    return _unavailable[0]


class RtspServer:
    """gst-rtsp-server in a child process streaming `video` in a loop at rtsp://127.0.0.1:PORT/PATH.

    `start()` returns once a client can connect; `stop()` kills it abruptly; `restart()` is stop + start on
    the same port and path. Also a context manager (stops on exit). The child also exits when this process
    dies (it watches its stdin pipe), so a crashed test run leaves no server behind.
    """

    def __init__(self, video: str | Path, port: int | None = None, path: str = DEFAULT_PATH):
        self.video = Path(video)
        self.port = port or free_port()
        self.path = path.strip("/")
        self.url = f"rtsp://{HOST}:{self.port}/{self.path}"
        self.startup_s: float | None = None  # seconds the last start() took until clients could connect
        self._proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RtspServer:
        if self.running:
            return self
        t0 = time.monotonic()
        self._log.seek(0)
        self._log.truncate()
        self._proc = subprocess.Popen(
            [SYSTEM_PYTHON, "-I", __file__, str(self.video), str(self.port), self.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
        )  # fmt: skip
        deadline = t0 + START_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self._proc.stdout], [], [], left)[0]:
                line = self._proc.stdout.readline()
                if line.strip() == READY_LINE:
                    self.startup_s = time.monotonic() - t0
                    return self
                if not line:  # the child exited before it was ready
                    break
        self.stop()
        self._log.seek(0)
        raise RuntimeError(f"RTSP server did not start within {START_TIMEOUT_S} s:\n{self._log.read().decode()}")

    def stop(self) -> None:
        """SIGKILL, no goodbye to clients: their sockets just close, as when a camera loses power."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc.stdin.close()
            self._proc.stdout.close()
            self._proc = None

    def restart(self) -> RtspServer:
        self.stop()
        return self.start()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            self.stop()


if __name__ != "__main__":  # imported by the tests; the system python running main() needs no pytest
    import pytest

    from support.parts import require

    @pytest.fixture
    def rtsp_server(ffpp):
        """A started RtspServer looping the first real FF++ video; skips where gst-rtsp-server is missing.

        Other test modules use it with `from rtsp_server import rtsp_server  # noqa: F401`.
        """
        require("GStreamer's RTSP server", unavailable_reason())
        with RtspServer(sorted((ffpp / "real").glob("*.mp4"))[0]) as server:
            yield server


# ---------------------------------------------------------------- the server itself (system python only)


def _gst():
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    missing = [e for e in REQUIRED_ELEMENTS if Gst.ElementFactory.find(e) is None]
    if missing:
        raise SystemExit(f"missing GStreamer elements: {', '.join(missing)}")
    return GLib, Gst, GstRtspServer


def _producer(Gst, GLib, video: str, loop):
    """Decode `video` at real time into the intervideo channel, rewinding forever; returns (pipeline, caps)."""
    pipe = Gst.parse_launch(
        f"filesrc name=src ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=I420 "
        f"! intervideosink name=sink channel={CHANNEL} sync=true"
    )
    pipe.get_by_name("src").set_property("location", video)
    segment = Gst.SeekFlags.SEGMENT

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.SEGMENT_DONE:  # end of file: rewind without flushing, time runs on
            pipe.seek_simple(Gst.Format.TIME, segment, 0)
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"producer error: {err.message} ({dbg})", file=sys.stderr)
            loop.quit()
        return True

    bus = pipe.get_bus()
    bus.add_watch(GLib.PRIORITY_DEFAULT, on_message)
    pipe.set_state(Gst.State.PAUSED)
    if pipe.get_state(int(START_TIMEOUT_S * Gst.SECOND))[0] != Gst.StateChangeReturn.SUCCESS:
        raise SystemExit(f"cannot preroll {video}")
    pipe.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | segment, 0)
    caps = pipe.get_by_name("sink").get_static_pad("sink").get_current_caps().get_structure(0)
    return pipe, caps


def main(argv: list[str]) -> int:
    GLib, Gst, GstRtspServer = _gst()
    if argv == ["--check"]:
        return 0
    video, port, path = argv
    loop = GLib.MainLoop()
    producer, caps = _producer(Gst, GLib, video, loop)
    width, height = caps.get_value("width"), caps.get_value("height")
    _, num, den = caps.get_fraction("framerate")
    fps = max(1, round(num / den))
    # intervideosrc times its own output, so give it the source's size and rate explicitly.
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( intervideosrc channel={CHANNEL} ! video/x-raw,width={width},height={height},framerate={num}/{den} "
        f"! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast sliced-threads=false bitrate={BITRATE_KBPS} "
        f"key-int-max={fps * GOP_S} ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory.set_shared(True)  # one encoder for all clients: two test sources can watch the same camera
    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(port)
    server.get_mount_points().add_factory(f"/{path}", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on {HOST}:{port}")
    producer.set_state(Gst.State.PLAYING)
    GLib.io_add_watch(sys.stdin.fileno(), GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP, lambda *_: loop.quit())
    print(READY_LINE, flush=True)
    loop.run()
    producer.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
