"""Stream hand-over: a snapshot taken after any segment, restored by a fresh session fed the same
later segments, gives exactly the events of an uninterrupted run."""

from __future__ import annotations

import random

import numpy as np
import pytest

from models.registry import SHIPPED, load_student
from models.runtime import StudentRuntime
from schemas.events import Category, RiskEvent, SegmentRef
from streaming.analyzer import StreamAnalyzer
from streaming.errors import SnapshotError
from streaming.extract import ExtractConfig
from streaming.session import StreamSession, events_of
from streaming.snapshot import StreamSnapshot
from streaming.synth import encode_segments
from tests.conftest import small_scenario

LOW = {c: 0.02 for c in Category}  # low thresholds: events open early and stay open across hand-overs
CFG = ExtractConfig(keyframe_width=0)


@pytest.fixture(scope="module")
def runtime() -> StudentRuntime:
    net, _ = load_student(SHIPPED)
    return StudentRuntime(net)


def _session(rt: StudentRuntime, version: str = "m-test") -> StreamSession:
    return StreamSession("cam-1", CFG, StreamAnalyzer("cam-1", rt, LOW, version, hysteresis=0.01))


def _pieces(segs: list[bytes], split: bool) -> list[bytes]:
    if not split:
        return segs
    whole = b"".join(segs)
    cuts = sorted(random.Random(5).sample(range(1, len(whole)), 9))
    return [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]


def _refs(n: int) -> list[SegmentRef]:
    return [SegmentRef(topic="seg", partition=0, offset=100 + i, sequence=i) for i in range(n)]


def _run(
    rt: StudentRuntime, pieces: list[bytes], handover: int | None, ends_gop: bool = False
) -> list[RiskEvent]:
    refs = _refs(len(pieces))
    s = _session(rt)
    events: list[RiskEvent] = []
    for i, (data, ref) in enumerate(zip(pieces, refs, strict=True)):
        if i == handover:
            snap = StreamSnapshot.from_bytes(s.snapshot().to_bytes())  # through the wire format
            if ends_gop:
                assert not snap.refs and snap.pending is None  # nothing carried over
            by_offset = {r.offset: p for r, p in zip(refs, pieces, strict=True)}
            payloads = [by_offset[r.offset] for r in snap.refs]
            s = StreamSession.restore(snap, payloads, _session(rt).analyzer, CFG)
        events += events_of(s.feed(data, None, ref, ends_gop=ends_gop))
    return events + s.end().events


@pytest.mark.parametrize(
    ("split", "gop_s"),
    [(False, 1.0), (True, 1.0), (True, 5.0)],
    ids=["gop-aligned", "random-bytes", "long-gop"],
)
def test_restored_session_continues_like_the_original(runtime, split, gop_s):
    _, segs = encode_segments(small_scenario(seed=12, duration_s=8.0, gop_s=gop_s, segment_s=1.0))
    pieces = _pieces([s.data for s in segs], split)
    baseline = _run(runtime, pieces, None)
    assert len(baseline) >= 4 and any(e.revision > 0 for e in baseline)  # events open across steps
    for k in range(1, len(pieces)):
        events = _run(runtime, pieces, k)
        got = [e.model_dump() for e in events]
        assert got == [e.model_dump() for e in baseline], f"hand-over before piece {k}"


def test_segments_that_end_their_gop_are_scored_at_once_and_hand_over_without_replay(runtime):
    """With ``ends_gop`` (closed GOPs cut at keyframes) a segment's GOP is scored with that
    segment, not the next: the same events, each citing the segment its GOP came in, and a
    snapshot taken between segments needs no segment fed again."""
    _, segs = encode_segments(small_scenario(seed=12, duration_s=8.0, gop_s=1.0, segment_s=1.0))
    assert all(s.ends_gop for s in segs)
    pieces = [s.data for s in segs]
    late, early = _run(runtime, pieces, None), _run(runtime, pieces, None, ends_gop=True)
    assert [e.event_id for e in early] == [e.event_id for e in late]
    assert [(e.score, e.window) for e in early] == [(e.score, e.window) for e in late]
    for e, was in zip(early, late, strict=True):  # the last GOP came with no segment: the end did it
        then = [r.sequence for r in was.evidence.segments] or [len(pieces)]
        assert [r.sequence for r in e.evidence.segments] == [q - 1 for q in then]
    for k in range(1, len(pieces)):
        got = [e.model_dump() for e in _run(runtime, pieces, k, ends_gop=True)]
        assert got == [e.model_dump() for e in early], f"hand-over before piece {k}"


def test_snapshot_replays_only_the_open_gop(runtime, small_stream):
    _, _, segs = small_stream
    s = _session(runtime)
    for ref, seg in zip(_refs(len(segs)), segs, strict=True):
        s.feed(seg.data, None, ref)
    snap = s.snapshot()
    assert len(snap.replay) <= 2 and snap.pending is not None and snap.last is not None
    assert len(snap.window) == min(len(segs) - 1, runtime.net.cfg.window)
    blob = snap.to_bytes()
    assert len(blob) < 400_000
    back = StreamSnapshot.from_bytes(blob)
    for a, b in zip(snap.window, back.window, strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_redelivered_segments_are_recognised(runtime, small_stream):
    _, _, segs = small_stream
    s = _session(runtime)
    refs = _refs(2)
    s.feed(segs[0].data, None, refs[0])
    assert s.seen(refs[0]) and not s.seen(refs[1])
    assert not s.seen(refs[0].model_copy(update={"partition": 1}))


def test_bad_snapshots_fail_clearly(runtime, small_stream):
    with pytest.raises(SnapshotError, match="not a gopwatch stream snapshot"):
        StreamSnapshot.from_bytes(b"garbage")
    with pytest.raises(SnapshotError, match="corrupt"):
        StreamSnapshot.from_bytes(b"GWS1\x00\x00\x00\x05{nope")
    _, _, segs = small_stream
    s = _session(runtime, "m-old")
    s.feed(segs[0].data, None, _refs(1)[0])
    with pytest.raises(SnapshotError, match="model m-old"):
        StreamSession.restore(s.snapshot(), [segs[0].data], _session(runtime, "m-new").analyzer, CFG)


def test_a_stream_moved_mid_caption_keeps_the_cascades_reading_of_it(runtime):
    """The cascade remembers the lines OCR read on a stream and reuses its verdict while they stay;
    that memory travels in the snapshot, so the new owner decides as the old one would have (a
    scale-in on Kafka found an OCR-driven event starting a segment early without it)."""
    from models.cascade import Cascade

    cfg = ExtractConfig(keyframe_width=1280)  # I-frames kept as pictures (the live path): the cascade reads
    shared = Cascade().warm()

    def session() -> StreamSession:  # a fresh worker's cascade: the models, none of the memory
        c = Cascade(_ocr=shared._ocr, _qr=shared._qr)
        return StreamSession(
            "cam-1", cfg, StreamAnalyzer("cam-1", runtime, LOW, "m-test", hysteresis=0.01, cascade=c)
        )

    _, segs = encode_segments(small_scenario(seed=12, duration_s=8.0, gop_s=1.0, segment_s=1.0))
    pieces, refs = [s.data for s in segs], _refs(len(segs))

    def run(handover: int | None) -> tuple[list[dict], bool]:
        s, events, carried = session(), [], False
        for i, (data, ref) in enumerate(zip(pieces, refs, strict=True)):
            if i == handover:
                snap = StreamSnapshot.from_bytes(s.snapshot().to_bytes())
                carried = snap.cascade is not None
                payloads = [pieces[r.offset - 100] for r in snap.refs]
                s = StreamSession.restore(snap, payloads, session().analyzer, cfg)
            events += events_of(s.feed(data, None, ref))
        return [e.model_dump() for e in events + s.end().events], carried

    baseline, _ = run(None)
    moved = 0
    for k in range(4, 8):  # around the caption (4.5-6.0 s)
        got, carried = run(k)
        moved += carried
        assert got == baseline, f"hand-over before segment {k}"
    assert moved, "no hand-over carried a cascade memory: the test did not test it"


def test_a_restored_cascade_memory_is_used_as_the_original_would_use_it():
    """With the memory carried over, the new owner reuses the verdict on lines still on screen, as
    the old owner would; without it, it reads them again (and may decide otherwise)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from models.cascade import Cascade
    from streaming.offline.overlays import fonts

    frame = np.full((360, 640, 3), 40, np.uint8)
    pic = Image.fromarray(frame)
    ImageDraw.Draw(pic).text(
        (40, 150), "SEND GIFT CARDS NOW", font=ImageFont.truetype(fonts()[0], 40), fill=(255, 255, 255)
    )
    frame = np.asarray(pic)
    scores = {Category.TEXT_LEXICON: 0.5}
    old = Cascade().warm()
    first = old.refine(scores, frame, "cam-1")
    head, arrays = old.memory("cam-1")  # type: ignore[misc]
    assert head["lines"] and arrays
    new = Cascade(_ocr=old._ocr, _qr=old._qr)
    new.recall("cam-1", head, arrays)
    read = old.lines_read
    assert new.refine(scores, frame, "cam-1") == old.refine(scores, frame, "cam-1") == first
    assert old.lines_read == read and new.lines_read == 0 and new.reused == old.reused == 1  # no OCR again
    fresh = Cascade(_ocr=old._ocr, _qr=old._qr)
    fresh.refine(scores, frame, "cam-1")
    assert fresh.lines_read > 0  # without the memory it reads the lines again
    with pytest.raises(ValueError, match="do not fit its box"):
        bad = {k: (v[:1] if k.endswith("grey") else v) for k, v in arrays.items()}
        Cascade().recall("cam-1", head, bad)


def _with_sound(path, seconds: int, pns: bool) -> bytes:
    """bikes' picture (1 s closed GOPs) with bigbuckbunny's sound as AAC, the two interleaved as
    an encoder sends them; ``pns``: let the AAC encoder use perceptual noise substitution."""
    from fractions import Fraction

    import av

    from streaming.media import decode_pcm
    from streaming.synth.assets import clip, clip_path

    frames, sound = clip("bikes")[0], decode_pcm(clip_path("bigbuckbunny"), 44100, seconds)
    assert sound is not None
    sound = np.tile(sound, seconds * 44100 // len(sound) + 1)  # 5.3 s of it, looped
    with av.open(str(path), "w", format="mpegts") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 320, 180, "yuv420p"
        vs.options = {"preset": "veryfast", "x264-params": "keyint=25:min-keyint=25:scenecut=0"}
        aus = out.add_stream("aac", rate=44100)
        aus.layout, aus.options = "mono", {"aac_pns": "1" if pns else "0"}
        per = 44100 // 25
        for i in range(seconds * 25):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i % len(frames)]), format="rgb24")
            f = f.reformat(width=320, height=180)
            f.pts, f.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(f))
            a = av.AudioFrame.from_ndarray(sound[None, i * per : (i + 1) * per], format="fltp", layout="mono")
            a.sample_rate, a.pts = 44100, i * per
            out.mux(aus.encode(a))
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    return path.read_bytes()


def test_a_stream_with_sound_hands_over_bit_for_bit_with_a_knowledge_base(tmp_path):
    """With a knowledge base the sound is state too: a snapshot references the earlier segments
    whose sound later GOPs still need (``heard``), the new owner's tap hears them again and places
    every sample on the same absolute grid, so a hand-over before any segment gives exactly the
    uninterrupted run's events: the same audio matches, with the same similarities, from the
    first GOP on. (With perceptual noise substitution in the AAC, FFmpeg's decoder draws that
    noise from a generator seeded when it starts: the similarities then differ by a hair.)"""
    from models.kb.base import KnowledgeBase
    from models.registry import SHIPPED
    from schemas.settings import Settings
    from streaming.kb import example_from_file
    from streaming.pipeline import LivePath
    from streaming.segmenter import segment_stream
    from streaming.synth.assets import clip_path

    kb = KnowledgeBase()
    kb.add(example_from_file(clip_path("bigbuckbunny"), "banned_stream_rebroadcast", "bbb"))
    live = LivePath.load(Settings(), SHIPPED, cascade=False, kb=kb)

    def run(pieces: list[bytes], handover: int | None) -> list[dict]:
        refs = _refs(len(pieces))
        s, events = live.session("dub"), []
        for i, (data, ref) in enumerate(zip(pieces, refs, strict=True)):
            if i == handover:
                snap = StreamSnapshot.from_bytes(s.snapshot().to_bytes())
                assert snap.heard and len(snap.refs) > len(snap.replay)  # earlier segments, for the sound
                by_offset = {r.offset: p for r, p in zip(refs, pieces, strict=True)}
                payloads = [by_offset[r.offset] for r in snap.refs]
                s = StreamSession.restore(snap, payloads, live.analyzer("dub"), live.extract)
            events += events_of(s.feed(data, None, ref))
        return [e.model_dump() for e in events + s.end().events]

    def similarities(events: list[dict]) -> list[float]:
        return [n["similarity"] for e in events for n in e["evidence"]["nearest_examples"]]

    for pns in (False, True):
        ts = _with_sound(tmp_path / f"dub-{pns}.ts", 10, pns)
        pieces = [seg.data for seg in segment_stream(ts, 2.0)]
        baseline = run(pieces, None)
        hits = [e for e in baseline if e["category"] == "banned_stream_rebroadcast"]
        assert hits and hits[0]["window"]["start_s"] < 4.0 and len(hits) >= 4  # found early, updated
        for k in range(2, len(pieces)):
            got = run(pieces, k)
            if not pns:
                assert got == baseline, f"hand-over before segment {k}"
            else:
                assert [e["event_id"] for e in got] == [e["event_id"] for e in baseline]
                assert np.allclose(similarities(got), similarities(baseline), atol=2e-3)


def test_the_knowledge_base_state_in_a_snapshot_is_bounded_and_checked():
    """The earlier segments for the sound and the ring's last GOPs travel in the snapshot (the
    fuzz seed ``with-sound.gws``); counts past their bounds, and ring entries of the wrong shape
    or type, are refused with the reason before anything uses them."""
    import json
    import struct
    from pathlib import Path

    from models.kb.base import KnowledgeBase
    from streaming.kb import StreamMatcher

    blob = (Path(__file__).resolve().parents[1] / "fuzz/corpus/snapshot/with-sound.gws").read_bytes()
    snap = StreamSnapshot.from_bytes(blob)
    assert len(snap.heard) == 1 and snap.refs == [snap.heard[0].ref]
    ((start, end, pic, heard, marks),) = snap.ring
    assert (start, end, pic.shape, heard.dtype, marks.tolist()) == (4.0, 6.0, (1, 63), np.float16, [[77, 1]])
    matcher = StreamMatcher(KnowledgeBase())
    matcher.resume(snap.ring)
    assert len(matcher.ring) == 1
    three = np.zeros((3, 63), np.float32)  # a picture and two insets
    bads = [(start, end, pic.astype(np.float64), heard, marks), (start, end, pic, heard[:, :5], marks),
            (start, end, pic, heard, marks.astype(np.int64)), (start, end, three, None, None)]  # fmt: skip
    for bad in bads:
        with pytest.raises(ValueError, match="wrong shape"):
            StreamMatcher(KnowledgeBase()).resume([bad])
    n = int.from_bytes(blob[4:8], "big")
    head = json.loads(blob[8 : 8 + n])
    for key, many in (("heard", head["heard"] * 17), ("ring", head["ring"] * 9)):
        h = json.dumps(head | {key: many}).encode()
        with pytest.raises(SnapshotError, match=f"'{key}' must be a list of at most"):
            StreamSnapshot.from_bytes(blob[:4] + struct.pack(">I", len(h)) + h + blob[8 + n :])


def test_an_open_gop_longer_than_the_bound_is_handed_over_cold(runtime, monkeypatch):
    """Keyframes minutes apart would make a snapshot reference, and a restore decode again, every
    segment since the last one: past MAX_REPLAY segments the snapshot references none, and the
    next owner starts at the next keyframe. A snapshot that lists more is refused."""
    import json
    import struct

    monkeypatch.setattr("streaming.session.MAX_REPLAY", 2)
    _, segs = encode_segments(small_scenario(seed=12, duration_s=12.0, gop_s=6.0, segment_s=1.0))
    whole = b"".join(s.data for s in segs)
    step = -(-len(whole) // 12)  # 12 pieces: about 6 to a GOP
    pieces = [whole[i : i + step] for i in range(0, len(whole), step)]
    refs = _refs(len(pieces))

    def starts(s: StreamSession, todo: range) -> list[float]:
        got = [sc.gop.start_s for i in todo for sc in s.feed(pieces[i], None, refs[i])]
        return got + [sc.gop.start_s for sc in s.end().scored]

    baseline = starts(_session(runtime), range(len(pieces)))
    s = _session(runtime)
    for i in range(5):  # 5 pieces into the first GOP
        s.feed(pieces[i], None, refs[i])
    assert len(s.replay) == 5
    snap = StreamSnapshot.from_bytes(s.snapshot().to_bytes())
    assert snap.refs == [] and snap.pending is None and len(snap.window) == len(s._analyzer().window)
    heir = StreamSession.restore(snap, [], _session(runtime).analyzer, CFG)
    got = starts(heir, range(5, len(pieces)))
    assert got and got == [t for t in baseline if t >= 6.0]  # from the next keyframe on, all of them
    monkeypatch.setattr("streaming.session.MAX_REPLAY", 32)
    s = _session(runtime)
    for i in range(5):
        s.feed(pieces[i], None, refs[i])
    blob = s.snapshot().to_bytes()
    n = int.from_bytes(blob[4:8], "big")
    head = json.loads(blob[8 : 8 + n])
    h = json.dumps(head | {"replay": head["replay"] * 7}).encode()  # 35 segments
    with pytest.raises(SnapshotError, match="'replay' must be a list of at most 32"):
        StreamSnapshot.from_bytes(blob[:4] + struct.pack(">I", len(h)) + h + blob[8 + n :])
