"""GStreamer's RTSP server looping a video like a live camera: the script that `support/rtsp_server.py` runs under
Debian's system python (the project venv cannot see python3-gi), `python3 -I rtsp_gst.py VIDEO PORT PATH`, or
`--check` to say whether GStreamer and every element it needs are there. It imports nothing of the tests.

How the video loops like a live camera: a producer pipeline decodes the file at its real frame rate into an
`intervideosink` and rewinds with segment seeks (running time keeps growing, so pacing never jumps). The
shared RTSP media reads `intervideosrc`, re-encodes with x264 at zero latency and a one-second GOP, so a
client that joins at any moment gets a keyframe within a second and then frames at real time. The server exits
when its stdin closes (the test process that started it died).

With `audio` (a WAV file, a fourth argument), the camera has a microphone too: a second producer loops the WAV the
same way into an `interaudiosink`, and the media sends it as AAC (MPEG4-GENERIC RTP, as IP cameras do) beside the
video.
"""

from __future__ import annotations

import sys

HOST = "127.0.0.1"
READY_LINE = "READY"  # printed once the port listens and the first frame is decoded
START_TIMEOUT_S = 20.0  # how long the producer may take to preroll
CHANNEL = "dfstream-rtsp-test"  # intervideo channel linking producer and RTSP media (per process)
GOP_S = 1  # keyframe interval in seconds: the longest a joining client waits for a decodable frame
BITRATE_KBPS = 2000
REQUIRED_ELEMENTS = (
    "filesrc", "qtdemux", "h264parse", "avdec_h264", "videoconvert",
    "intervideosink", "intervideosrc", "x264enc", "rtph264pay",
)  # fmt: skip
AUDIO_ELEMENTS = ("wavparse", "audioconvert", "audioresample", "interaudiosink", "interaudiosrc", "avenc_aac",
                  "rtpmp4gpay")
AUDIO_RATE = 16000  # the microphone's rate (a camera's AAC at 16 kHz mono)


def _gst():
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    missing = [e for e in REQUIRED_ELEMENTS + AUDIO_ELEMENTS if Gst.ElementFactory.find(e) is None]
    if missing:
        raise SystemExit(f"missing GStreamer elements: {', '.join(missing)}")
    return GLib, Gst, GstRtspServer


def _producer(Gst, GLib, video: str, loop, launch: str | None = None):
    """Decode `video` at real time into the intervideo channel (or run `launch`, whose `src` reads `video` and whose
    `sink` is an inter sink), rewinding forever; returns (pipeline, caps)."""
    pipe = Gst.parse_launch(launch or (
        f"filesrc name=src ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=I420 "
        f"! intervideosink name=sink channel={CHANNEL} sync=true"
    ))
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
    video, port, path, *audio = argv
    loop = GLib.MainLoop()
    producer, caps = _producer(Gst, GLib, video, loop)
    sound = ""
    if audio:  # a microphone: the WAV looped into the interaudio channel, sent as AAC beside the video
        mic, _ = _producer(Gst, GLib, audio[0], loop, (
            f"filesrc name=src ! wavparse ! audioconvert ! audioresample "
            f"! audio/x-raw,format=S16LE,rate={AUDIO_RATE},channels=1 "
            f"! interaudiosink name=sink channel={CHANNEL}-audio sync=true"))
        sound = (f" interaudiosrc channel={CHANNEL}-audio ! audio/x-raw,rate={AUDIO_RATE},channels=1 ! audioconvert "
                 f"! avenc_aac ! rtpmp4gpay name=pay1 pt=97")
    width, height = caps.get_value("width"), caps.get_value("height")
    _, num, den = caps.get_fraction("framerate")
    fps = max(1, round(num / den))
    # intervideosrc times its own output, so give it the source's size and rate explicitly.
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( intervideosrc channel={CHANNEL} ! video/x-raw,width={width},height={height},framerate={num}/{den} "
        f"! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast sliced-threads=false bitrate={BITRATE_KBPS} "
        f"key-int-max={fps * GOP_S} ! rtph264pay name=pay0 pt=96 config-interval=-1{sound} )"
    )
    factory.set_shared(True)  # one encoder for all clients: two test sources can watch the same camera
    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(port)
    server.get_mount_points().add_factory(f"/{path}", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on {HOST}:{port}")
    producer.set_state(Gst.State.PLAYING)
    if audio:
        mic.set_state(Gst.State.PLAYING)
    GLib.io_add_watch(sys.stdin.fileno(), GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP, lambda *_: loop.quit())
    print(READY_LINE, flush=True)
    loop.run()
    producer.set_state(Gst.State.NULL)
    if audio:
        mic.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
