"""The PyAV source on real and broken media: frames, timestamps, sampling, states and clear errors."""

import pytest

from stream.live.sources import AVSource, SourceError, SourceState
from stream.live.sources.av_source import FrameSampler
from stream.live.sources.urls import redact

from support.shared import FFPP


def test_decodes_rgb_frames_with_timestamps():
    src = AVSource(FFPP / "real" / "004.mp4", sample_fps=5)
    frames = list(src.frames())
    assert src.state is SourceState.ENDED
    assert frames[0].image.shape == (720, 1280, 3) and frames[0].image.dtype.name == "uint8"
    times = [f.time for f in frames]
    assert times == sorted(times) and times[0] == 0.0
    # 12.36 s at 25 fps sampled at 5 fps: one frame per 0.2 s
    assert len(frames) == 62
    assert all(abs((b - a) - 0.2) < 1e-6 for a, b in zip(times, times[1:]))
    assert src.frames_decoded == 309 and src.frames_emitted == 62
    assert all(f.pts is not None for f in frames)


def test_sampler_grid_is_repeatable():
    s = FrameSampler(2.0)
    kept = [t / 30 for t in range(90) if s.accept(t / 30)]
    assert len(kept) == 6
    with pytest.raises(ValueError):
        FrameSampler(0)


@pytest.mark.parametrize(
    "content, message",
    [(None, "no such file"), (b"", "empty file"), (b"not a video\n", "cannot open as video")],
)
def test_bad_files_fail_clearly(tmp_path, content, message):
    path = tmp_path / "input.mp4"
    if content is not None:
        path.write_bytes(content)
    src = AVSource(path)
    with pytest.raises(SourceError, match=message):
        list(src.frames())
    assert src.state is SourceState.FAILED and message in src.error


def test_truncated_video_fails_clearly(tmp_path):
    data = (FFPP / "real" / "004.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="cannot open as video|truncated|decoding failed"):
        list(AVSource(cut).frames())


def test_truncated_stream_with_header_first_is_reported(tmp_path):
    """A file whose header survives but whose frames stop early (moov first, mdat cut) is 'truncated'."""
    import av

    src = FFPP / "real" / "004.mp4"
    full = tmp_path / "faststart.mp4"
    with av.open(str(src)) as inp, av.open(str(full), "w", options={"movflags": "faststart"}) as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for packet in inp.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)
    data = full.read_bytes()
    cut = tmp_path / "cut_faststart.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(SourceError, match="truncated|decoding failed"):
        list(AVSource(cut).frames())
    assert len(list(AVSource(full).frames())) == 309  # the uncut remux is whole


def test_credentials_never_in_errors():
    url = "rtsp://admin:s3cret@127.0.0.1:9/cam"
    assert redact(url) == "rtsp://***@127.0.0.1:9/cam"
    src = AVSource(url, options={"rtsp_transport": "tcp", "timeout": "2000000"})
    with pytest.raises(SourceError) as err:
        list(src.frames())
    assert "s3cret" not in str(err.value) and "admin" not in str(err.value)
    assert src.name == "rtsp://***@127.0.0.1:9/cam"
