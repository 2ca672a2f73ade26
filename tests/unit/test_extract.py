"""Incremental extraction: PyAV-equal vectors, split invariance, cold start, codecs, bad input."""

from __future__ import annotations

import contextlib
import gc
import io

import av
import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import CoverageMode
from streaming.errors import (
    CorruptSegmentError,
    DecodeBudgetExceededError,
    MediaError,
    OversizedInputError,
    UnsupportedCodecError,
)
from streaming.extract import ExtractConfig, GopFeatures, StreamExtractor
from streaming.kernels import gop_maps_into
from streaming.media import iter_motion_vectors
from streaming.offline.pictures import motion_picture
from streaming.pipeline import extract_file
from streaming.records import block_luma, to_float16, to_float32
from streaming.segmenter import segment_stream
from streaming.synth import encode_stream
from streaming.synth.assets import clip_path
from tests.conftest import remux, small_scenario, tiny_video


def run(parts: list[bytes], cfg: ExtractConfig | None = None) -> list[GopFeatures]:
    ex = StreamExtractor("s", cfg)
    out: list[GopFeatures] = []
    for p in parts:
        if p:
            out += ex.feed(p)
    return out + ex.flush()


def same(a: list[GopFeatures], b: list[GopFeatures]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if (x.gop_index, x.start_s, x.end_s, x.frame_types) != (
            y.gop_index,
            y.start_s,
            y.end_s,
            y.frame_types,
        ):
            return False
        for f in ("mv", "residual", "thumbnail"):
            if not np.array_equal(getattr(x, f), getattr(y, f)):
                return False
    return True


@pytest.fixture(scope="module")
def whole(small_stream) -> tuple[bytes, list[GopFeatures]]:
    _, data, _ = small_stream
    return data, run([data], ExtractConfig(keep_raw_mvs=True, qp=True))


def test_vectors_equal_pyav_export_frame_by_frame(whole):
    data, feats = whole
    ours = [m for g in feats for m in (g.raw_mvs or ())]
    types = "".join(g.frame_types for g in feats)
    theirs = list(iter_motion_vectors(data))
    assert len(ours) == len(theirs) == 200
    assert types == "".join(t for _, t, _ in theirs)
    for (i, _, ref), mine in zip(theirs, ours, strict=True):
        assert np.array_equal(ref, mine), f"frame {i}"
    assert sum(len(m) for m in ours) > 10_000  # P and B frames really carry vectors
    assert all(len(m) == 0 for (_, t, _), m in zip(theirs, ours, strict=True) if t == "I")


def test_features_shape_and_timing(whole):
    _, feats = whole
    assert [g.gop_index for g in feats] == [0, 1, 2, 3]
    g = feats[0]
    assert g.n_frames == 50 and g.frame_types[0] == "I" and "B" in g.frame_types
    assert g.mv.shape == (50, 2, 2, 12, 20) and g.mv.dtype == np.float16
    assert g.residual.shape == (50, 12, 20)
    assert g.thumbnail.shape == (90, 160, 3)
    assert g.end_s - g.start_s == pytest.approx(2.0)
    assert feats[1].start_s == pytest.approx(feats[0].end_s)
    assert g.coverage is CoverageMode.FULL
    assert g.qp.shape == (50,) and 10 < float(g.qp.mean()) < 51  # x264 at crf 23
    b_frames = [t == "B" for t in g.frame_types]
    assert g.qp[b_frames].mean() > g.qp[0]  # x264 quantises B-frames coarser than the I-frame
    # B-frames keep their future-reference (list1) vectors apart from list0
    b = [i for i, t in enumerate(g.frame_types) if t == "B"]
    assert np.abs(g.mv[b, 1].astype(np.float32)).sum() > 0


def test_flash_gop_has_larger_residuals_than_the_same_scene_without(small_stream):
    from streaming.synth.scenario import FlashOverlay, Scenario, Scene

    sc, _, _ = small_stream
    calm = Scenario(
        name="calm",
        seed=1,
        duration_s=2.0,
        encoding=sc.encoding,
        scenes=(Scene(start_s=0, kind="photo", source="coffee", motion="pan", sprites=0),),
    )
    flash = calm.model_copy(update={"overlays": (FlashOverlay(start_s=0.2, end_s=2.0, hz=6, area=0.6),)})
    r_calm = run([encode_stream(calm)])[0].residual.astype(np.float32).mean()
    r_flash = run([encode_stream(flash)])[0].residual.astype(np.float32).mean()
    assert r_flash > 3 * r_calm


def test_residuals_on_reference_frames_against_their_reference(small_stream, whole):
    """ "IP": I/P frames get residual maps, B-frames none (zeros); a P-frame is compared with the
    previous I/P frame, so its residual differs from the default every-frame mode ("all"), where it
    is compared with the B-frame shown just before it."""
    _, data, _ = small_stream
    ip = run([data], ExtractConfig(residual_frames="IP"))
    every = whole[1]
    for g, a in zip(ip, every, strict=True):
        t = np.frombuffer(g.frame_types.encode(), np.uint8)
        b, p = t == ord("B"), t == ord("P")
        assert b.any() and p.any()
        assert not g.residual[b].any()  # never read
        assert a.residual[b].astype(np.float32).mean() > 0
        assert g.residual[p].astype(np.float32).mean() > 0
        assert np.array_equal(g.mv, a.mv)  # vectors are the same either way
        after_b = [i for i in range(1, len(t)) if p[i] and b[i - 1]]
        assert after_b and not np.array_equal(g.residual[after_b], a.residual[after_b])
    with pytest.raises(ValueError, match="residual_frames"):
        ExtractConfig(residual_frames="B")


def test_segment_by_segment_equals_whole(small_stream, whole):
    _, _, segs = small_stream
    _, ref = whole
    assert same(run([s.data for s in segs]), ref)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=12))
def test_any_byte_split_gives_identical_features(small_stream, whole, cuts):
    data, ref = whole[0], whole[1]
    points = sorted({c % len(data) for c in cuts})
    parts = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert same(run(parts), ref)


def test_cold_start_mid_stream_skips_to_next_keyframe(small_stream, whole):
    _, data, segs = small_stream
    _, ref = whole
    start = len(segs[0].data) + len(segs[1].data) // 2  # inside GOP 1, not on a keyframe
    feats = run([data[start:]])
    assert feats[0].frame_types[0] == "I" and feats[0].start_s == pytest.approx(ref[2].start_s)
    assert feats[0].skipped_frames > 0
    for a, b in zip(feats, ref[2:], strict=True):
        assert a.frame_types == b.frame_types and np.array_equal(a.mv, b.mv)


def test_long_gop_is_cut_into_time_steps():
    feats = list(extract_file(clip_path("bigbuckbunny"), "bbb", ExtractConfig(step_s=2.0)))
    assert [(g.gop_index, g.chunk_index) for g in feats] == [(0, 0), (0, 1), (0, 2)]
    assert feats[1].start_s == pytest.approx(2.0, abs=0.05)
    assert sum(g.n_frames for g in feats) == 132


def test_hevc_is_degraded_and_flagged():
    data = encode_stream(small_scenario(duration_s=4.0, codec="libx265", preset="ultrafast"))
    feats = run([data])
    assert len(feats) == 2 and all(g.coverage is CoverageMode.NO_MOTION_VECTORS for g in feats)
    assert all(not g.mv.any() for g in feats)
    assert feats[0].thumbnail.std() > 5  # the I-frame is still there
    assert feats[0].codec.value == "hevc"
    assert np.isnan(feats[0].qp).all()  # FFmpeg exports no HEVC QP either


def test_mpeg4_part2_works_like_h264():
    data = encode_stream(small_scenario(duration_s=4.0, codec="mpeg4"))
    feats = run([data])
    assert feats[0].codec.value == "mpeg4" and feats[0].coverage is CoverageMode.FULL
    assert np.abs(feats[0].mv.astype(np.float32)).sum() > 0
    # no IDR pictures, so a segment's "ends its GOP" is not taken on trust: nothing is drained
    segs = list(segment_stream(data, target_s=1.0))
    assert len(segs) > 1 and not any(s.ends_gop for s in segs[:-1])
    ex = StreamExtractor("s")
    flagged = []
    for seg in segs:
        flagged += ex.feed(seg.data, ends_gop=True)
        assert not ex.drained
    # the same records as without the flag (and as another run: packets carry FFmpeg's zeroed
    # padding, without which this decoder read past them into whatever the heap held)
    assert same(flagged + ex.flush(), run([s.data for s in segs]))


def test_annexb_elementary_stream(small_stream, whole):
    _, data, _ = small_stream
    es = remux(data, "h264")
    feats = run([es[:5000], es[5000:]])
    _, ref = whole
    assert [g.frame_types for g in feats] == [g.frame_types for g in ref]
    assert np.array_equal(feats[1].mv, ref[1].mv)


def test_iframe_only_and_skip_options(small_stream):
    _, data, _ = small_stream
    key = run([data], ExtractConfig(keyframes_only=True))
    assert [g.frame_types for g in key] == ["I"] * 4 and key[0].coverage is CoverageMode.IFRAME_ONLY
    assert [g.start_s for g in key] == pytest.approx([0.08, 2.08, 4.08, 6.08], abs=0.1)
    nonref = run([data], ExtractConfig(skip_nonref=True))  # x264's b-pyramid keeps some B as references
    assert 100 < sum(g.n_frames for g in nonref) < 200
    assert len(run([data], ExtractConfig(skip_loop_filter=True))) == 4


def test_skip_loop_filter_leaves_keyframes_and_vectors_alone():
    """The filter is skipped on non-key frames only: the I-frames the cascade and the evidence read
    are the deblocked ones, and the vectors come from the bitstream either way. The stream is coded
    where deblocking matters (x264's ultrafast preset turns it off; a high crf makes it strong)."""
    data = encode_stream(small_scenario(duration_s=4.0, crf=40, preset="veryfast"))
    full = run([data], ExtractConfig(keyframe_width=320))
    fast = run([data], ExtractConfig(keyframe_width=320, skip_loop_filter=True))
    assert [g.frame_types for g in fast] == [g.frame_types for g in full]
    for a, b in zip(full, fast, strict=True):
        assert a.keyframe is not None and np.array_equal(a.keyframe, b.keyframe)
        assert np.array_equal(a.mv, b.mv)
        drift = float(np.abs(a.residual - b.residual).mean())
        assert 0 < drift < 0.05 * float(np.abs(a.residual).mean())  # the non-key frames did change


def test_frames_are_released_without_the_cyclic_gc(small_stream):
    """Reading a frame's side data must not tie the frame into a reference cycle: frames held until
    a collection keep the decoder's buffer pools allocating fresh memory (page faults)."""
    _, data, _ = small_stream
    gc.collect()
    gc.disable()
    try:
        feats = run([data], ExtractConfig(qp=True, keyframe_width=320, block_luma=True))
        alive = sum(type(o) is av.VideoFrame for o in gc.get_objects())
    finally:
        gc.enable()
    frames = sum(g.n_frames for g in feats)
    assert frames > 100
    assert alive < frames // 10  # a few in use; with the cycle, every frame decoded (over 200)


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (b"", CorruptSegmentError, "empty payload"),
        (b"hello world, not video" * 50, CorruptSegmentError, "unrecognised payload"),
        (b"\x47" + bytes(range(200)) * 10, CorruptSegmentError, "no MPEG-TS packet"),
    ],
)
def test_garbage_raises_typed_errors(payload, error, message):
    with pytest.raises(error, match=message):
        StreamExtractor("s").feed(payload)


def test_garbage_after_a_good_start_is_no_ts_packet(small_stream):
    _, _, segs = small_stream
    ex = StreamExtractor("s")
    ex.feed(segs[0].data)
    with pytest.raises(CorruptSegmentError, match="no MPEG-TS packet"):
        ex.feed(bytes(range(200)) * 10)


def test_wrong_codec_in_ts():
    with pytest.raises(UnsupportedCodecError, match="mpeg2video"):
        StreamExtractor("s").feed(tiny_video("mpeg2video", "mpegts"))


def test_limits_resolution_and_time_budget(small_stream):
    _, data, segs = small_stream
    with pytest.raises(OversizedInputError, match="320x180 is over the limit 160x2160"):
        run([data], ExtractConfig(max_width=160))
    with pytest.raises(DecodeBudgetExceededError, match="budget"):
        run([segs[0].data], ExtractConfig(decode_budget_s=1e-6))


def test_bad_segment_resets_context_and_next_good_one_works(small_stream, whole):
    _, _, segs = small_stream
    _, ref = whole
    ex = StreamExtractor("s")
    got = ex.feed(segs[0].data)
    with pytest.raises(MediaError):
        ex.feed(b"\x00\x01garbage" * 300)
    assert not ex.has_context
    got += ex.feed(segs[2].data) + ex.feed(segs[3].data) + ex.flush()
    assert [g.start_s for g in got][-2:] == [ref[2].start_s, ref[3].start_s]
    assert np.array_equal(got[-1].mv, ref[3].mv)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1, max_size=40))
def test_random_corruption_never_crashes(small_stream, flips):
    _, _, segs = small_stream
    bad = bytearray(segs[1].data)
    for pos, val in flips:
        bad[pos % len(bad)] = val
    ex = StreamExtractor("s")
    ex.feed(segs[0].data)
    with contextlib.suppress(MediaError):
        ex.feed(bytes(bad))
    ex.feed(segs[2].data)  # the stream goes on
    tail = ex.flush()
    assert tail and tail[-1].frame_types[0] == "I"


def test_motion_picture_is_an_image(whole):
    _, feats = whole
    pic = motion_picture(feats[1], width=320)
    assert pic.shape == (180, 320, 3) and pic.dtype == np.uint8


def test_compiled_kernels_match_plain_numpy_and_opencv(small_stream):
    """The numba kernels against straightforward references on real vectors and real frames."""
    import cv2

    from streaming.kernels import mv_field_into

    def mv_field(rec: np.ndarray, hm: int, wm: int) -> np.ndarray:
        out = np.zeros((2, 2, hm, wm), np.float32)
        mv_field_into(rec, out, np.empty((2, hm, wm), np.float32))
        return out

    from streaming.media import enable_mv_export, luma, motion_vector_records

    _, data, _ = small_stream
    with av.open(io.BytesIO(data)) as c:
        vs = c.streams.video[0]
        enable_mv_export(vs.codec_context)
        frames = [
            (motion_vector_records(f), luma(f).copy()) for _, f in zip(range(30), c.decode(vs), strict=False)
        ]
    rec, _ = frames[10]
    assert rec is not None
    hm, wm = 12, 20
    ref = np.zeros((2, 2, hm, wm))
    area = np.zeros((2, hm, wm))
    for r in rec:
        li = int(r["source"] > 0)
        y, x = min(r["dst_y"] // 16, hm - 1), min(r["dst_x"] // 16, wm - 1)
        a = float(r["w"]) * float(r["h"])
        ref[li, :, y, x] += a * np.array([r["motion_x"], r["motion_y"]]) / max(int(r["motion_scale"]), 1)
        area[li, y, x] += a
    ref /= np.maximum(area, 1)[:, None]
    assert np.allclose(mv_field(rec, hm, wm), ref, atol=1e-4)

    from streaming.kernels import residual_into

    flow0 = mv_field(frames[11][0], hm, wm)[0]
    assert np.abs(flow0).max() > 0
    for scale in (4, 16):  # 4x4 samples per macroblock, and the one-sample path
        px = 16 // scale
        cur = cv2.resize(frames[11][1], (wm * px, hm * px), interpolation=cv2.INTER_NEAREST)
        prev = cv2.resize(frames[10][1], (wm * px, hm * px), interpolation=cv2.INTER_NEAREST)
        out = np.zeros((hm, wm), np.float32)
        residual_into(cur, prev, flow0, scale, out)
        gy, gx = np.mgrid[0 : hm * px, 0 : wm * px].astype(np.float32)
        f = np.repeat(np.repeat(flow0, px, axis=1), px, axis=2) / scale
        pred = cv2.remap(prev, gx + f[0], gy + f[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        expect = np.abs(cur.astype(np.float32) - pred).reshape(hm, px, wm, px).mean(axis=(1, 3))
        assert np.abs(out - expect).max() < 1.0, scale  # OpenCV interpolates in 1/32 steps
        assert out.mean() > 0.1


@pytest.mark.parametrize(
    "cfg", [ExtractConfig(), ExtractConfig(keyframes_only=True)], ids=["full", "iframes"]
)
def test_segments_that_end_their_gop_give_each_gop_with_its_own_segment(small_stream, cfg):
    """``ends_gop`` drains the decoder at the segment's end: the same records as without it,
    each one segment earlier, and nothing left that a next segment needs."""
    _, _, segs = small_stream
    assert all(s.ends_gop for s in segs)
    late, early = StreamExtractor("s", cfg), StreamExtractor("s", cfg)
    got_late: list[GopFeatures] = []
    got_early: list[GopFeatures] = []
    for i, seg in enumerate(segs):
        got_late += late.feed(seg.data)
        now = early.feed(seg.data, ends_gop=True)
        assert [g.gop_index for g in now] == [i] and early.drained and early.pending() is None
        got_early += now
    assert same(got_early + early.flush(), got_late + late.flush())


def test_fragmented_mp4_fragments_that_end_their_gop_come_out_with_it(small_stream):
    """One fMP4 fragment per GOP (``frag_keyframe``): each drained at its end, same records."""
    _, data, _ = small_stream
    mp4 = _to_fmp4(data)
    boxes, i = [], 0
    while i < len(mp4):
        n = int.from_bytes(mp4[i : i + 4], "big")
        boxes.append((mp4[i + 4 : i + 8], mp4[i : i + n]))
        i += n
    init = b"".join(b for t, b in boxes if t in (b"ftyp", b"moov"))
    frags: list[bytes] = []
    for t, b in boxes:
        if t == b"moof":
            frags.append(b)
        elif t not in (b"ftyp", b"moov"):
            frags[-1] += b
    ex = StreamExtractor("s")
    got = ex.feed(init, ends_gop=True)
    for k, frag in enumerate(frags):
        now = ex.feed(frag, ends_gop=True)
        assert [g.gop_index for g in now] == [k]
        got += now
    assert same(got + ex.flush(), run([mp4])) and ex.skipped_total == 0


def test_a_segment_after_a_drain_that_starts_mid_gop_waits_for_its_keyframe(small_stream):
    """A wrong ``ends_gop`` (the next segment does not start with a keyframe) costs the frames up
    to the next keyframe, counted as skipped, and nothing else."""
    _, _, segs = small_stream
    ref = run([s.data for s in segs])
    ex = StreamExtractor("s")
    ex.feed(segs[0].data, ends_gop=True)
    cut = len(segs[1].data) // 2 // 188 * 188  # from a TS packet in the middle of the GOP
    assert ex.feed(segs[1].data[cut:]) == []
    got = ex.feed(segs[2].data) + ex.flush()
    assert got[0].skipped_frames > 0 and ex.skipped_total == got[0].skipped_frames
    assert got[0].start_s == ref[2].start_s and got[0].frame_types == ref[2].frame_types
    np.testing.assert_array_equal(got[0].mv, ref[2].mv)


def test_vector_field_mixes_whole_and_partitioned_macroblocks():
    """The kernel's two paths: a 16x16 record is its macroblock's vector, smaller partitions are
    area-weighted (an 8x8 and a 16x8 tiling one list, list0 and list1 apart), quarter pixels."""
    from streaming.kernels import mv_field_into

    dtype = np.dtype(
        [("source", "i4"), ("w", "u1"), ("h", "u1"), ("src_x", "i2"), ("src_y", "i2"), ("dst_x", "i2"),
         ("dst_y", "i2"), ("flags", "u8"), ("motion_x", "i4"), ("motion_y", "i4"), ("motion_scale", "u2")],
        align=True,
    )  # fmt: skip
    rows = [  # (source, w, h, dst_x, dst_y, motion_x, motion_y): dst is the block's centre
        (-1, 16, 16, 8, 8, 8, -4),  # macroblock (0, 0), list0: 2, -1 px
        (1, 16, 16, 8, 8, -12, 0),  # macroblock (0, 0), list1: -3, 0 px
        (-1, 8, 8, 20, 4, 4, 0),  # macroblock (0, 1), list0, four 8x8 partitions
        (-1, 8, 8, 28, 4, 8, 0),
        (-1, 8, 8, 20, 12, 12, 0),
        (-1, 8, 8, 28, 12, 16, 4),
        (1, 16, 8, 24, 4, 40, 0),  # macroblock (0, 1), list1: two 16x8 halves
        (1, 16, 8, 24, 12, 0, 8),
    ]
    rec = np.zeros(len(rows), dtype)
    for r, (src, w, h, x, y, mx, my) in zip(rec, rows, strict=True):
        r["source"], r["w"], r["h"], r["dst_x"], r["dst_y"] = src, w, h, x, y
        r["motion_x"], r["motion_y"], r["motion_scale"] = mx, my, 4
    out = np.full((2, 2, 2, 3), np.nan, np.float32)
    mv_field_into(rec, out, np.full((2, 2, 3), np.nan, np.float32))
    assert out[0, :, 0, 0].tolist() == [2.0, -1.0] and out[1, :, 0, 0].tolist() == [-3.0, 0.0]
    assert out[0, :, 0, 1].tolist() == [2.5, 0.25]  # mean of 1, 2, 3, 4 px and of 0, 0, 0, 1 px
    assert out[1, :, 0, 1].tolist() == [5.0, 1.0]  # mean of 10 and 0 px, of 0 and 2 px
    out[:, :, 0, :2] = 0.0
    assert not out.any()  # every other macroblock is zero, whatever was in the buffers


def _to_fmp4(ts: bytes) -> bytes:
    return remux(ts, "mp4", {"movflags": "frag_keyframe+empty_moov+default_base_moof"})


def test_fragmented_mp4_at_any_split_equals_mpegts(small_stream, whole):
    _, data, _ = small_stream
    _, ref = whole
    mp4 = _to_fmp4(data)
    assert mp4[4:8] == b"ftyp"
    rng = np.random.default_rng(3)
    points = sorted(int(x) for x in rng.integers(1, len(mp4), 9))
    parts = [mp4[a:b] for a, b in zip([0, *points], [*points, len(mp4)], strict=True)]
    feats = run(parts)
    assert [g.frame_types for g in feats] == [g.frame_types for g in ref]
    assert [g.start_s for g in feats] == pytest.approx([g.start_s for g in ref], abs=1e-3)
    assert all(np.array_equal(a.mv, b.mv) for a, b in zip(feats, ref, strict=True))


def test_fragmented_mp4_garbage_box_is_corrupt(small_stream):
    _, data, _ = small_stream
    import struct

    mp4 = _to_fmp4(data)
    end = 0
    for _ in range(4):  # ftyp, moov, moof, mdat: the init segment and the first fragment
        end += struct.unpack_from(">I", mp4, end)[0]
    ex = StreamExtractor("s")
    assert ex.feed(mp4[:end]) == []  # GOP 0 is complete only when GOP 1 starts
    with pytest.raises(CorruptSegmentError, match="fragmented MP4"):
        ex.feed(b"\xff" * 4000)


def test_accumulated_motion_traces_back_to_the_first_frame():
    from streaming.extract import accumulate_motion

    pan = np.zeros((5, 2, 6, 8), np.float32)
    pan[1:, 0] = 2.0  # every frame moves 2 px right of its reference (after the I-frame)
    acc = accumulate_motion(pan)
    assert np.allclose(acc[:, 0, 3, 4], [0, 2, 4, 6, 8])
    assert not acc[:, 1].any()
    still = np.zeros_like(pan)
    assert not accumulate_motion(still).any()


def test_accumulated_mv_on_real_features(whole):
    _, feats = whole
    acc = feats[0].accumulated_mv()
    assert acc.shape == (50, 2, 12, 20)
    assert np.abs(acc[-1]).mean() > np.abs(feats[0].mv[-1, 0].astype(np.float32)).mean()


def test_the_half_float_conversions_are_bit_identical_to_numpys():
    """The record builder stores vectors and residuals as float16 and the student reads them back
    as float32, both through OpenCV's conversion: bit for bit what ``astype`` gives, NaN,
    infinities and subnormals included, for every shape a record has (and none)."""
    rng = np.random.default_rng(0)
    for shape in [(50, 2, 2, 45, 80), (7, 45, 80), (3,), (0, 45, 80)]:
        a = rng.normal(0, 40, shape).astype(np.float32)
        a.flat[:3] = [np.nan, np.inf, 3e-8][: a.size]
        half = to_float16(a)
        assert half.dtype == np.float16 and np.array_equal(
            half.view(np.int16), a.astype(np.float16).view(np.int16)
        )
        back = to_float32(half)
        assert back.dtype == np.float32 and np.array_equal(
            back.view(np.int32), half.astype(np.float32).view(np.int32)
        )


def _numpy_gop_maps(g: GopFeatures, ip_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """The student's per-macroblock summaries written plainly in numpy: the reference."""
    mv, res = g.mv.astype(np.float32), g.residual.astype(np.float32)
    types = np.frombuffer(g.frame_types.encode(), np.uint8)
    if ip_only:
        res = res[types != ord("B")]
    l0, l1 = mv[:, 0], mv[:, 1]
    mag0, mag1 = np.hypot(l0[:, 0], l0[:, 1]), np.hypot(l1[:, 0], l1[:, 1])
    maps = np.stack([l0[:, 0].mean(0) / 8, l0[:, 1].mean(0) / 8, mag0.mean(0) / 8, mag1.mean(0) / 8,
                     res.mean(0) / 32, res.std(0) / 32])  # fmt: skip
    return maps, mag0.mean(axis=(1, 2)) / 8


def test_the_compiled_gop_summaries_equal_numpys(whole):
    """The student's maps and motion series from the compiled pass equal the plain numpy
    computation to float rounding, on real GOPs, with every residual map and with I/P ones."""
    _, gops = whole
    for g in gops:
        for ip_only in (False, True):
            mv = to_float32(g.mv)
            res = to_float32(g.residual)
            if ip_only:
                res = res[np.frombuffer(g.frame_types.encode(), np.uint8) != ord("B")]
            maps = np.empty((6, *mv.shape[3:]), np.float32)
            mag0 = np.empty(len(mv), np.float32)
            gop_maps_into(mv, np.ascontiguousarray(res), maps, mag0)
            ref_maps, ref_mag0 = _numpy_gop_maps(g, ip_only)
            scale = np.array([8, 8, 8, 8, 32, 32], np.float32)[:, None, None]
            np.testing.assert_allclose(maps / scale, ref_maps, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(mag0 / 8, ref_mag0, rtol=1e-5, atol=1e-6)
            assert np.abs(maps).max() > 0


def test_block_luma_equals_the_area_resize_of_its_samples():
    """The compiled macroblock means give OpenCV's area resize of the every-4th-pixel samples
    exactly (rounding half to even included) on a frame of whole macroblocks; other sizes take
    the resize itself."""
    rng = np.random.default_rng(1)
    for h, w in ((720, 1280), (368, 640), (360, 640)):
        frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (h, w), np.uint8), format="gray")
        frame = frame.reformat(format="yuv420p")
        hm, wm = -(-h // 16), -(-w // 16)
        y = frame.to_ndarray()[:h]
        ref = cv2.resize(np.ascontiguousarray(y[::4, ::4]), (wm, hm), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(block_luma(frame, hm, wm), ref)
