"""Hostile bytes from the wire: every parser refuses them with its own error, bounded in time and
memory, and a worker turns any failure into that record's dead letter without losing the stream."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from fractions import Fraction

import av
import pytest

from consumers.engine import Engine, InputRecord
from consumers.restore import SetAside
from schemas.segment import Container, SegmentHeaders
from schemas.settings import Settings
from streaming.errors import CorruptSegmentError
from streaming.extract import StreamExtractor
from streaming.fmp4 import Fmp4Demuxer
from streaming.gop import ExtractConfig
from streaming.synth import encode_segments
from tests.conftest import small_scenario


def box(typ: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + typ + body


TKHD_4_BYTES = box(b"moov", box(b"trak", box(b"tkhd", b"\x00\x00\x00\x00")))  # the 28-byte record
TFHD = box(b"tfhd", struct.pack(">II", 0, 1))  # track 1, no defaults
HUGE_TRUN = box(b"moof", box(b"traf", TFHD + box(b"trun", struct.pack(">II", 0, 1_000_000))))


def test_the_28_byte_record_is_a_corrupt_segment():
    assert len(TKHD_4_BYTES) == 28
    with pytest.raises(CorruptSegmentError, match="box ends before its fields"):
        Fmp4Demuxer().feed(TKHD_4_BYTES)


def test_a_track_run_cannot_claim_more_samples_than_its_box_holds():
    demux = Fmp4Demuxer()
    demux.track_id = 1  # as if an init segment had declared track 1
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(CorruptSegmentError, match="claims 1000000 samples"):
        demux.feed(HUGE_TRUN)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000 and time.perf_counter() - t0 < 1.0


def test_a_short_box_field_anywhere_in_an_init_segment_is_refused():
    """Every box a demuxer reads fields from, cut after its header: a clean refusal each time."""
    for typ in (b"tkhd", b"mdhd"):
        with pytest.raises(CorruptSegmentError):
            Fmp4Demuxer().feed(box(b"moov", box(b"trak", box(b"mdia", box(typ, b"\x01")))))
    for typ in (b"tfhd", b"tfdt", b"trun"):
        demux = Fmp4Demuxer()
        demux.track_id = 1
        before = b"" if typ == b"tfhd" else TFHD
        with pytest.raises(CorruptSegmentError):
            demux.feed(box(b"moof", box(b"traf", before + box(typ, b"\x00\x00"))))


@pytest.fixture(scope="module")
def segs() -> list:
    return encode_segments(small_scenario(seed=5, duration_s=6.0, gop_s=1.0, segment_s=1.0))[1]


def _rec(
    offset: int, value: bytes, seg, container: Container | None = None, sid: bytes = b"cam-1"
) -> InputRecord:
    h = SegmentHeaders(sequence=offset, media_start_s=seg.media_start_s,
                       media_duration_s=seg.media_duration_s, codec=seg.codec,
                       container=container or seg.container, ingest_ms=int(time.time() * 1000))  # fmt: skip
    return InputRecord("seg", 0, offset, sid, value, tuple(h.to_kafka()))


def test_poison_records_become_dead_letters_and_the_stream_goes_on(sensitive_model, segs, monkeypatch):
    """The 28-byte record, and an exception gopwatch never planned for, are dead letters with the
    real class and reason; the good segments around them still make records."""
    engine = Engine(Settings(workers=0, cascade=False), sensitive_model)
    clean = Engine(Settings(workers=0, cascade=False), sensitive_model)
    first = [engine.process(_rec(i, s.data, s)) for i, s in enumerate(segs[:2])]
    poison = engine.process(_rec(2, TKHD_4_BYTES, segs[2], Container.FMP4, b"cam-2"))
    assert poison.outcome == "dead_letter" and poison.dead is not None
    assert poison.dead.error_class == "CorruptSegmentError" and "box ends before" in poison.dead.reason

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("a bug, not bad input")

    session = engine.sessions["cam-1"]
    monkeypatch.setattr(session.extractor, "feed", boom)
    crash = engine.process(_rec(3, segs[2].data, segs[2]))
    monkeypatch.undo()
    assert crash.outcome == "dead_letter" and crash.dead is not None
    assert (crash.dead.error_class, crash.dead.reason) == ("RuntimeError", "a bug, not bad input")
    later = [engine.process(_rec(4 + i, s.data, s)) for i, s in enumerate(segs[3:])]
    assert [o.outcome for o in first + later] == ["ok"] * (len(segs) - 1)
    assert "cam-1" in engine.sessions  # the stream's state survived; only its decoder restarted
    # paired negative: the same segments without poison go through one engine just the same
    assert [clean.process(_rec(i, s.data, s)).outcome for i, s in enumerate(segs)] == ["ok"] * len(segs)


def test_claim_checks_are_read_only_from_their_root(tmp_path):
    from consumers.claims import read_claim_check
    from schemas.errors import InvalidMessageError
    from streaming.errors import OversizedInputError

    root = tmp_path / "spool"
    root.mkdir()
    (root / "seg.bin").write_bytes(b"x" * 100)
    (tmp_path / "secret").write_bytes(b"s")
    (root / "link.bin").symlink_to(tmp_path / "secret")
    assert read_claim_check((root / "seg.bin").as_uri(), root, 1000) == b"x" * 100
    refused = {
        "off unless configured": ((root / "seg.bin").as_uri(), None, 1000, InvalidMessageError),
        "outside the root": ((tmp_path / "secret").as_uri(), root, 1000, InvalidMessageError),
        "dot-dot out of it": (f"file://{root}/../secret", root, 1000, InvalidMessageError),
        "symlink out of it": ((root / "link.bin").as_uri(), root, 1000, InvalidMessageError),
        "over the size cap": ((root / "seg.bin").as_uri(), root, 99, OversizedInputError),
        "http is not fetched": ("https://example.invalid/x", root, 1000, InvalidMessageError),
        "missing file": ((root / "nope.bin").as_uri(), root, 1000, InvalidMessageError),
    }
    for why, (uri, r, cap, error) in refused.items():
        with pytest.raises(error):
            read_claim_check(uri, r, cap)
            pytest.fail(why)


def test_a_dead_letter_names_the_field_a_validation_error_is_about():
    from pydantic import ValidationError

    from consumers.engine import reason_line
    from schemas.events import MediaWindow

    with pytest.raises(ValidationError) as e:
        MediaWindow(start_s=5.0, end_s=2.0)
    assert reason_line(e.value).startswith("MediaWindow value: ")
    assert "ends (2.0) before it starts (5.0)" in reason_line(e.value)
    assert reason_line(RuntimeError("x\ny")) == "x" and reason_line(KeyError()) == "KeyError"


def _ts_garbage(n: int, seed: int) -> bytes:
    """Random bytes framed as MPEG-TS: a sync byte every 188, random PIDs and payloads."""
    import random

    rnd = random.Random(seed)
    return b"".join(b"\x47" + rnd.randbytes(187) for _ in range(n))


def _bit_flipped(data: bytes, seed: int) -> bytes:
    """Bytes flipped inside TS payloads (past the first packets' tables): damaged, not garbage."""
    import random

    rnd = random.Random(seed)
    out = bytearray(data)
    for _ in range(30):
        k = rnd.randrange(2000, len(out))
        if k % 188 > 8:
            out[k] ^= 0xFF
    return bytes(out)


def test_segments_without_video_are_dead_letters_and_damaged_ones_are_flagged(sensitive_model, segs):
    engine = Engine(Settings(workers=0, cascade=False), sensitive_model)
    outs = [engine.process(_rec(i, s.data, s)) for i, s in enumerate(segs[:2])]
    garbage = [_ts_garbage(40, 1), _ts_garbage(1, 2), b"\x47" + bytes(range(200)), bytes(range(7, 256)) * 2]
    dead = [engine.process(_rec(2 + i, g, segs[2])) for i, g in enumerate(garbage)]
    assert [d.outcome for d in dead] == ["dead_letter"] * len(garbage)
    assert all(d.dead and d.dead.error_class == "CorruptSegmentError" for d in dead)
    assert "no video in the segment" in (dead[0].dead.reason if dead[0].dead else "")
    fresh = engine.process(
        _rec(0, _ts_garbage(40, 3), segs[0], sid=b"cam-9")
    )  # a stream that is only garbage
    assert fresh.outcome == "dead_letter"
    damaged = engine.process(_rec(9, _bit_flipped(segs[2].data, 0), segs[2]))
    rest = [engine.process(_rec(10 + i, s.data, s)) for i, s in enumerate(segs[3:])]
    assert [o.outcome for o in [*outs, damaged, *rest]] == ["ok"] * len(segs)
    flagged = [e for o in [damaged, *rest] for e in o.events if "damaged_input" in e.coverage.flags]
    assert flagged, "events made from the damaged GOP say so"
    assert sum(o.damaged_frames for o in [damaged, *rest]) > 0
    # paired negative: the same stream undamaged flags nothing
    clean = Engine(Settings(workers=0, cascade=False), sensitive_model)
    events = [e for i, s in enumerate(segs) for e in clean.process(_rec(i, s.data, s)).events]
    assert events and not any(e.coverage.flags for e in events)


def _stream_recs(
    segs, start_offset: int, seq0: int = 0, epoch: int = 0, t0: float = 0.0
) -> list[InputRecord]:
    out = []
    for i, seg in enumerate(segs):
        h = SegmentHeaders(sequence=seq0 + i, media_start_s=t0 + seg.media_start_s,
                           media_duration_s=seg.media_duration_s, codec=seg.codec, container=seg.container,
                           ingest_ms=int(time.time() * 1000), ends_gop=seg.ends_gop, epoch=epoch)  # fmt: skip
        out.append(InputRecord("seg", 0, start_offset + i, b"cam-1", seg.data, tuple(h.to_kafka())))
    return out


def _keys_unique(events) -> None:
    bodies: dict[tuple[str, int], str] = {}
    for e in events:
        key = (e.event_id, e.revision)
        assert bodies.setdefault(key, e.model_dump_json()) == e.model_dump_json(), f"{key} emitted twice"


@pytest.mark.parametrize(
    ("how", "epoch_after"),
    [("encoder restart: sequence and timestamps start again", "0.1"), ("new ingest epoch header", "7")],
)
def test_an_encoder_restart_closes_the_old_epoch_and_starts_a_new_one(
    sensitive_model, segs, how, epoch_after
):
    engine = Engine(Settings(workers=0, cascade=False), sensitive_model)
    first = _stream_recs(segs[:4], 0)
    again = _stream_recs(segs, 4, epoch=7 if epoch_after == "7" else 0)  # the same stream from its start
    outs = [engine.process(r) for r in first + again]
    assert [o.outcome for o in outs] == ["ok"] * len(outs)  # nothing goes to the dead-letter topic
    restart = outs[len(first)]
    assert restart.new_epoch == epoch_after
    before = [e for o in outs[: len(first)] for e in o.events]
    opened = {e.event_id for e in before if e.lifecycle.value == "started"}
    closed_at_restart = {e.event_id for e in restart.events if e.lifecycle.value == "ended"}
    assert (
        opened and opened - {e.event_id for e in before if e.lifecycle.value == "ended"} <= closed_at_restart
    )
    after = [e for o in outs[len(first) :] for e in o.events if e.event_id not in opened]
    assert after and all(e.epoch == epoch_after for e in after)
    _keys_unique([e for o in outs for e in o.events])


def test_a_publishers_retry_is_skipped_and_counted(sensitive_model, segs):
    engine = Engine(Settings(workers=0, cascade=False), sensitive_model)
    recs = _stream_recs(segs[:3], 0) + _stream_recs(segs[3:4], 4, seq0=3)
    retry = InputRecord("seg", 0, 3, recs[2].key, recs[2].value, recs[2].headers)  # same seq, same bytes
    outs = [engine.process(r) for r in [*recs[:3], retry, recs[3]]]
    assert [o.outcome for o in outs] == ["ok", "ok", "ok", "duplicate", "ok"]
    assert all(o.new_epoch is None for o in outs)
    # paired negative: the same sequence with other bytes is a restart, not a retry
    other = InputRecord(recs[2].topic, 0, 5, recs[2].key, segs[0].data, recs[2].headers)
    assert engine.process(other).new_epoch == "0.1"


def test_the_epoch_survives_a_hand_over(sensitive_model, segs):
    """A snapshot taken after a restart carries the epoch: the next owner's events keep it, and
    a retry of the last segment is still recognised."""
    first = Engine(Settings(workers=0, cascade=False), sensitive_model)
    recs = _stream_recs(segs[:3], 0) + _stream_recs(segs[:3], 3)  # a restart at offset 3
    outs = [first.process(r) for r in recs]
    assert outs[3].new_epoch == "0.1"
    blob = first.snapshots(["cam-1"])["cam-1"]
    from streaming.snapshot import StreamSnapshot

    by_offset = {r.offset: r for r in recs}
    second = Engine(Settings(workers=0, cascade=False), sensitive_model)
    second.restore(blob, [by_offset[ref.offset] for ref in StreamSnapshot.peek(blob)[1]])
    rest = _stream_recs(segs[3:], 7, seq0=3)
    assert second.sessions["cam-1"].epoch == "0.1"
    retry = InputRecord("seg", 0, 6, b"cam-1", recs[-1].value, recs[-1].headers)
    assert second.process(retry).outcome == "duplicate"
    events = [e for r in rest for e in second.process(r).events]
    assert events and {e.epoch for e in events} == {"0.1"}


def _creeping(frames: int) -> bytes:
    """One GOP of 64x48 H.264 whose timestamps advance one 90 kHz tick a frame: seconds of
    frames that all sit inside one record's span."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.time_base = 64, 48, "yuv420p", Fraction(1, 90000)
        s.options = {"x264-params": "keyint=10000:min-keyint=10000:scenecut=0:bframes=0"}
        for i in range(frames):
            f = av.VideoFrame(64, 48, "yuv420p")
            f.pts, f.time_base = i, Fraction(1, 90000)
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return buf.getvalue()


def test_a_record_holds_a_bounded_number_of_frames_however_the_timestamps_creep():
    ex = StreamExtractor("cam-1")
    records = ex.feed(_creeping(700)) + ex.flush()
    frames = [len(r.frame_types) for r in records]
    assert sum(frames) == 700 and max(frames) == ExtractConfig().max_record_frames == 602


@pytest.mark.parametrize(
    "blob", [b"", b"\xff", b"[1]", b'{"topic": "t"}', b"[" * 100_000,
             b'{"topic": "t", "partition": "x", "offset": 1, "reason": ""}'],
)  # fmt: skip
def test_a_set_aside_mark_is_read_strictly_since_any_stream_id_could_forge_its_key(blob):
    """The changelog's set-aside marks share the topic with snapshots, keyed by stream id: a stream
    named like a mark writes a snapshot there, which must read as no mark at all."""
    assert SetAside.parse(blob) is None
    mark = SetAside("gopwatch.segments", 3, 42, "worker process 0 died (exit code -11)")
    assert SetAside.parse(mark.to_bytes()) == mark and mark.key == "\x00set-aside/gopwatch.segments/3/42"
