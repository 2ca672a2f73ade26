"""The knowledge base: the index wrapper (add, remove, search, negatives, directory round trip,
damaged files refused), examples from real files, and known content matched on the live path."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from models.errors import KbError
from models.kb.base import Example, KnowledgeBase
from models.kb.visual import DIM, visual_vector
from schemas.events import RiskEvent
from streaming.synth.assets import clip, clip_path

RNG = np.random.default_rng(7)


def _unit(n: int) -> np.ndarray:
    v = RNG.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _near(v: np.ndarray, noise: float = 0.05) -> np.ndarray:
    w = v + noise * RNG.standard_normal(v.shape).astype(np.float32)
    return w / np.linalg.norm(w, axis=-1, keepdims=True)


def test_add_search_remove_and_the_version_follows_the_set():
    a, b = _unit(6), _unit(6)
    kb = KnowledgeBase()
    assert kb.version == "empty" and kb.match(_near(a[:2])) is None
    kb.add(Example("clip-a", "banned_stream_rebroadcast", a))
    kb.add(Example("clip-b", "scam_overlay_v7", b))
    v1 = kb.version
    m = kb.match(_near(a[2:4]))
    assert m is not None and m.example_id == "clip-a" and m.category == "banned_stream_rebroadcast"
    assert m.nearest[0].passes and m.similarity > 0.9
    assert kb.match(_unit(2)) is None  # unrelated GOPs match nothing
    assert kb.remove("clip-a") and not kb.remove("clip-a")
    assert kb.version != v1 and kb.match(_near(a[2:4])) is None


def test_one_gop_alike_is_not_a_match_a_run_is():
    a = _unit(4)
    kb = KnowledgeBase()
    kb.add(Example("a", "known_content", a))
    assert kb.match(_near(a[:1])) is None  # a single GOP: not a sequence
    assert kb.match(np.stack([_near(a[0]), _unit(1)[0]])) is None  # one of two GOPs alike
    assert kb.match(_near(a[:2])) is not None


def test_a_negative_at_least_as_close_suppresses_the_match():
    a = _unit(4)
    kb = KnowledgeBase()
    kb.add(Example("risk", "known_content", a))
    kb.add(Example("our-intro", "known_content", a.copy(), negative=True))
    assert kb.match(_near(a[:2])) is None
    kb.remove("our-intro")
    assert kb.match(_near(a[:2])) is not None


def test_directory_round_trip_and_a_changed_file_is_refused(tmp_path):
    kb = KnowledgeBase(thresholds={"scam_overlay_v7": 0.8})
    kb.add(Example("a", "scam_overlay_v7", _unit(5), notes="seen on cam-9", source_sha256="ab" * 32))
    kb.add(Example("b", "known_content", _unit(3), negative=True))
    kb.save(tmp_path / "kb")
    back = KnowledgeBase.load(tmp_path / "kb")
    assert back.version == kb.version and back.threshold("scam_overlay_v7") == 0.8
    assert back.examples["a"].notes == "seen on cam-9" and back.examples["b"].negative
    np.testing.assert_array_equal(back.examples["a"].vectors, kb.examples["a"].vectors)
    kb.remove("b")
    kb.save(tmp_path / "kb")
    assert not (tmp_path / "kb" / "b.npz").exists()  # a removed example's file goes too
    f = tmp_path / "kb" / "a.npz"
    data = bytearray(f.read_bytes())
    data[-20] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(KbError, match="sha256 does not match"):
        KnowledgeBase.load(tmp_path / "kb")
    (tmp_path / "kb" / "kb.json").write_text("{not json")
    with pytest.raises(KbError, match="cannot read"):
        KnowledgeBase.load(tmp_path / "kb")


def test_a_folder_whose_arrays_are_hostile_is_refused_with_the_reason(tmp_path):
    """A folder from ``kb import`` may come from anywhere; its sha256s only say it is whole. An
    array header numpy's tokenizer chokes on, or one that declares more than the file holds, is a
    one-line KbError, and nothing of the declared size is allocated."""
    import hashlib
    import json

    from tests.conftest import rewrite_npz

    kb = KnowledgeBase()
    kb.add(Example("a", "scam_overlay_v7", _unit(2)))
    kb.save(tmp_path / "kb")
    f, manifest = tmp_path / "kb" / "a.npz", tmp_path / "kb" / "kb.json"
    good = f.read_bytes()
    for old, new, why in ((b"'descr':", b"'descr'(", "TokenError"),
                          (b"'shape': (2,", b"'shape': (9999999999999,", "does not match")):  # fmt: skip
        forged = rewrite_npz(good, lambda b, old=old, new=new: b.replace(old, new), "vectors.npy")
        f.write_bytes(forged)
        m = json.loads(manifest.read_text())
        m["examples"][0]["sha256"] = hashlib.sha256(forged).hexdigest()
        manifest.write_text(json.dumps(m))
        with pytest.raises(KbError, match=f"cannot read the knowledge base.*{why}"):
            KnowledgeBase.load(tmp_path / "kb")


@pytest.mark.parametrize(
    "kw, why",
    [
        ({"example_id": "../etc"}, "example id"),
        ({"category": "Scam Overlay"}, "category"),
        ({"vectors": np.zeros((0, DIM), np.float32)}, "vectors"),
        ({"vectors": np.full((2, DIM), np.nan, np.float32)}, "NaN"),
    ],
)
def test_bad_examples_are_refused_with_the_reason(kw, why):
    base = {"example_id": "ok", "category": "known_content", "vectors": _unit(2)}
    with pytest.raises(KbError, match=why):
        Example(**(base | kw))


def test_the_visual_space_ignores_colour_bars_and_mirroring_as_stored():
    """Greyscale and letterboxed copies of a real frame stay close to it; another clip does not."""
    import cv2

    from models.kb.visual import example_views

    frames, _ = clip("bikes")
    f = cv2.resize(frames[40], (160, 90), interpolation=cv2.INTER_AREA)
    v = visual_vector(f)
    grey = np.repeat(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    boxed = np.zeros_like(f)
    boxed[12:78] = cv2.resize(f, (160, 66), interpolation=cv2.INTER_AREA)
    other = cv2.resize(clip("bigbuckbunny")[0][40], (160, 90), interpolation=cv2.INTER_AREA)
    assert float(v @ visual_vector(grey)) > 0.95
    assert float(v @ visual_vector(boxed)) > 0.9
    assert float(v @ visual_vector(other)) < 0.5
    views = np.stack(example_views(f))
    assert float((views @ visual_vector(np.ascontiguousarray(f[:, ::-1]))).max()) > 0.99


def _picture_in_picture(inner: np.ndarray, outer: np.ndarray, frac: float) -> np.ndarray:
    """``inner`` shrunk to ``frac`` of the frame, bottom right, over ``outer``."""
    import cv2

    h, w = outer.shape[:2]
    out = outer.copy()
    ih, iw = int(h * frac) // 2 * 2, int(w * frac) // 2 * 2
    out[h - ih - h // 20 : h - h // 20, w - iw - w // 20 : w - w // 20] = cv2.resize(inner, (iw, ih))
    return out


def test_an_inset_is_found_in_a_picture_in_picture_and_not_in_plain_real_pictures():
    import cv2

    from models.kb.visual import inset, query_vectors

    bikes, bbb = clip("bikes")[0], clip("bigbuckbunny")[0]

    def thumb(f: np.ndarray) -> np.ndarray:
        return cv2.resize(f, (160, 90), interpolation=cv2.INTER_AREA)

    for frac, box in ((0.4, (88, 50, 152, 86)), (0.6, (56, 32, 152, 86))):
        t = thumb(_picture_in_picture(bbb[60], bikes[60], frac))
        found = inset(t)
        assert found is not None and max(abs(a - b) for a, b in zip(found, box, strict=True)) <= 1
        views = query_vectors(t)
        assert len(views) == 2 and float(views[1] @ visual_vector(thumb(bbb[60]))) > 0.95
    for f in [*bikes[::50], *bbb[::50]]:  # plain pictures: one vector, no inset
        assert inset(thumb(f)) is None and len(query_vectors(thumb(f))) == 1


def test_a_clip_shown_as_a_picture_in_picture_matches_its_example(tmp_path):
    """bigbuckbunny taught; a stream of it at 40 % inside bikes' picture gives its event."""
    import av

    from models.registry import SHIPPED
    from schemas.settings import Settings
    from streaming.kb import example_from_file
    from streaming.pipeline import LivePath, analyze_source

    kb = KnowledgeBase()
    kb.add(example_from_file(clip_path("bigbuckbunny"), "banned_stream_rebroadcast", "bbb"))
    live = LivePath.load(Settings(), SHIPPED, cascade=False, kb=kb)
    bbb, bikes = clip("bigbuckbunny")[0], clip("bikes")[0]
    path = tmp_path / "pip.ts"
    with av.open(str(path), "w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
        s.options = {"preset": "veryfast", "x264-params": "keyint=25:min-keyint=25:scenecut=0"}
        for i in range(len(bbb)):
            frame = _picture_in_picture(bbb[i], bikes[i % len(bikes)], 0.4)
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    events = [e for r in analyze_source(path, live.session("pip")) for e in r.events]
    hits = [e for e in events if e.category == "banned_stream_rebroadcast"]
    assert hits and hits[0].evidence.nearest_examples[0].example_id == "bbb"


def test_analyze_with_a_kb_reports_the_known_clip_with_its_example(tmp_path):
    """A real clip taught as an example under the operator's own category: a greyscale re-encode
    of it gives an event of that category citing the example and the base version (and the wire
    schema takes the name); an unrelated real clip gives none."""
    from schemas.settings import Settings
    from streaming.kb import example_from_file
    from streaming.pipeline import LivePath, analyze_source
    from tests.conftest import reencode_grey

    kb = KnowledgeBase()
    kb.add(example_from_file(clip_path("bigbuckbunny"), "banned_stream_rebroadcast", "bbb"))
    from models.registry import SHIPPED

    live = LivePath.load(Settings(), SHIPPED, cascade=False, kb=kb)
    copy = reencode_grey(clip_path("bigbuckbunny"), tmp_path / "copy.ts")
    events = [e for r in analyze_source(copy, live.session("cam")) for e in r.events]
    known = [e for e in events if e.category == "banned_stream_rebroadcast"]
    assert known and known[0].kb_version == kb.version
    assert known[0].lifecycle.value == "started" and known[-1].lifecycle.value == "ended"
    assert known[0].evidence.nearest_examples[0].example_id == "bbb"
    assert RiskEvent.model_validate_json(known[0].model_dump_json()).category == "banned_stream_rebroadcast"
    assert not [e for e in events if str(e.category) == "known_content"]
    other = [e for r in analyze_source(clip_path("bikes"), live.session("cam2")) for e in r.events]
    assert not [e for e in other if e.category == "banned_stream_rebroadcast"]


def test_kb_cli_add_search_list_remove(tmp_path):
    from tests.unit.test_cli import run

    folder = tmp_path / "kb"
    bbb = str(clip_path("bigbuckbunny"))
    r = run("kb", "add", bbb, "--category", "scam_overlay_v7", "--dir", str(folder), "--id", "bbb")
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "bbb", r.stderr
    r = run("kb", "search", str(clip_path("bigbuckbunny")), "--dir", str(folder), "--json")
    rows = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert rows[0]["id"] == "bbb" and rows[0]["match"] and rows[0]["category"] == "scam_overlay_v7"
    r = run("kb", "add", str(tmp_path / "missing.mp4"), "--category", "x_y", "--dir", str(folder))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = run("kb", "remove", "bbb", "--dir", str(folder))
    assert r.returncode == 0
    r = run("kb", "list", "--dir", str(folder), "--json")
    assert r.returncode == 0 and not r.stdout.strip()


def test_the_worker_engine_matches_against_its_kb_dir(tmp_path):
    """GOPWATCH_KB_DIR: the engine loads the base and its events cite the example."""
    from consumers.engine import Engine
    from models.registry import SHIPPED
    from schemas.settings import Settings
    from streaming.kb import example_from_file
    from streaming.segmenter import segment_stream
    from tests.conftest import reencode_grey
    from tests.unit.test_engine import _recs

    kb = KnowledgeBase()
    kb.add(example_from_file(clip_path("bigbuckbunny"), "banned_stream_rebroadcast", "bbb"))
    kb.save(tmp_path / "kb")
    engine = Engine(Settings(kb_dir=tmp_path / "kb", cascade=False, lag_degrade_s=3600), SHIPPED)
    segs = list(segment_stream(reencode_grey(clip_path("bigbuckbunny"), tmp_path / "copy.ts"), 1.0))
    events = [e for rec in _recs(segs, ends_gop=True) for e in engine.process(rec).events]
    known = [e for e in events if e.category == "banned_stream_rebroadcast"]
    assert known and {e.kb_version for e in known} == {kb.version}
    assert known[0].evidence.nearest_examples[0].example_id == "bbb"


def test_topic_entries_round_trip_and_hostile_records_are_refused_before_allocating():
    from models.kb.wire import MAGIC, decode_example, encode_example

    ex = Example("clip-a", "scam_overlay_v7", _unit(3), notes="n", positions=np.arange(3, dtype=np.int32))
    back = decode_example(b"clip-a", encode_example(ex))
    assert back.digest() == ex.digest() and back.positions is not None and list(back.positions) == [0, 1, 2]
    good = encode_example(ex)
    head_len = int.from_bytes(good[4:8], "big")
    from schemas.kb import KbEntryHead

    head = KbEntryHead(example_id="clip-a", category="x_y", count=999_999, dim=DIM).model_dump_json()
    huge = MAGIC + len(head).to_bytes(4, "big") + head.encode() + good[8 + head_len :]  # a count it lacks
    cases = {
        b"garbage": "GWK1",
        MAGIC + (10**9).to_bytes(4, "big"): "out of bounds",
        MAGIC + head_len.to_bytes(4, "big") + b"{" * head_len: "bad head",
        huge: "999999 vectors",
        good[:-4]: "body of",
    }
    for value, why in cases.items():
        with pytest.raises(KbError, match=why):
            decode_example(b"clip-a", value)
    with pytest.raises(KbError, match="not the example id"):
        decode_example(b"other", good)


def test_the_engine_applies_topic_changes_and_skips_bad_records():
    from consumers.engine import Engine
    from models.kb.wire import encode_example
    from models.registry import SHIPPED
    from schemas.settings import Settings

    engine = Engine(Settings(cascade=False), SHIPPED)
    ex = Example("clip-a", "known_content", _unit(2))
    r = engine.apply_kb([(b"clip-a", encode_example(ex)), (b"x", b"\x00garbage"), (b"clip-b", None)])
    assert r.examples == 1 and r.applied == 2 and len(r.skipped) == 1 and "GWK1" in r.skipped[0]
    assert r.version == engine.live.kb.version != "empty"
    assert engine.apply_kb([(b"clip-a", None)]).version == "empty"


def test_the_thresholds_record_sets_clears_and_refuses_bad_values():
    """The topic's ``_thresholds`` record sets a category's thresholds per space (the base's
    version follows), its null clears them, and a bad one is skipped with the reason."""
    from consumers.engine import Engine
    from models.kb.wire import THRESHOLDS_KEY, encode_example, encode_thresholds
    from models.registry import SHIPPED
    from schemas.settings import Settings

    engine = Engine(Settings(cascade=False), SHIPPED)
    kb = engine.live.kb
    engine.apply_kb([(b"clip-a", encode_example(Example("clip-a", "scam_overlay", _unit(2))))])
    v0 = kb.version
    r = engine.apply_kb(
        [(THRESHOLDS_KEY, encode_thresholds({"scam_overlay": 0.8, "scam_overlay:audio": 0.97}))]
    )
    assert r.applied == 1 and not r.skipped and r.version != v0
    assert kb.threshold("scam_overlay") == 0.8 and kb.threshold("scam_overlay", "audio") == 0.97
    assert kb.threshold("scam_overlay", "text") == 0.36  # the space's default
    bad = [b'{"scam_overlay": 1.5}', b'{"Bad Name": 0.5}', b"[0.5]", b"not json", b'{"a_b": "0.5"}']
    r = engine.apply_kb([(THRESHOLDS_KEY, v) for v in bad])
    assert len(r.skipped) == len(bad) and kb.threshold("scam_overlay") == 0.8
    assert engine.apply_kb([(THRESHOLDS_KEY, None)]).version == v0 and kb.threshold("scam_overlay") == 0.70


def test_calibrate_fits_thresholds_on_a_validation_folder_and_stores_them(tmp_path):
    """A real clip taught; a greyscale copy as its validation file and two unrelated real clips
    as benign: the fitted visual threshold sits just over the benign files' best score, the copy
    still reaches it, and ``--apply`` stores it where ``stats`` shows it; ``kb threshold`` sets
    and clears one by hand."""
    import shutil

    from tests.conftest import reencode_grey
    from tests.unit.test_cli import run

    folder, val = tmp_path / "kb", tmp_path / "validation"
    (val / "banned_stream_rebroadcast").mkdir(parents=True)
    (val / "benign").mkdir()
    reencode_grey(clip_path("bigbuckbunny"), val / "banned_stream_rebroadcast" / "copy.ts")
    for name in ("bikes", "carphone_pristine"):
        shutil.copy(clip_path(name), val / "benign" / f"{name}.mp4")
    bbb = str(clip_path("bigbuckbunny"))
    assert (
        run("kb", "add", bbb, "--category", "banned_stream_rebroadcast", "--dir", str(folder)).returncode == 0
    )
    r = run("kb", "calibrate", str(val), "--dir", str(folder), "--json", "--apply")
    row = json.loads(r.stdout.splitlines()[0])
    assert r.returncode == 0 and row["category"] == "banned_stream_rebroadcast", r.stderr
    assert row["found"] == 1 and row["positives"] == 1 and row["negatives"] == 2
    fitted = row["thresholds"]["visual"]
    assert 0.0 < fitted < 0.7 and "audio" not in row["thresholds"]  # the benign clips have no sound
    assert KnowledgeBase.load(folder).threshold("banned_stream_rebroadcast") == fitted
    r = run("kb", "threshold", "banned_stream_rebroadcast", "0.9", "--space", "audio", "--dir", str(folder))
    assert (
        r.returncode == 0
        and KnowledgeBase.load(folder).threshold("banned_stream_rebroadcast", "audio") == 0.9
    )
    r = run("kb", "threshold", "banned_stream_rebroadcast", "--dir", str(folder))
    assert KnowledgeBase.load(folder).threshold("banned_stream_rebroadcast") == 0.70
    r = run("kb", "calibrate", str(val / "benign"), "--dir", str(folder))
    assert r.returncode == 2 and "no benign/" in r.stderr
    r = run("kb", "threshold", "x_y", "0.5", "--space", "smell", "--dir", str(folder))
    assert r.returncode == 2 and "--space" in r.stderr


def test_an_example_added_later_gives_the_streams_that_showed_it_a_retroactive_event(tmp_path):
    """The stream showed the clip before anyone taught it: when the example arrives, the stream's
    next result carries a started and an ended known_content event over that span, flagged
    retroactive; a stream that never showed it gets none."""
    from consumers.engine import Engine
    from models.kb.wire import encode_example
    from models.registry import SHIPPED
    from schemas.settings import Settings
    from streaming.kb import example_from_file
    from streaming.segmenter import segment_stream
    from tests.conftest import reencode_grey
    from tests.unit.test_engine import _recs

    engine = Engine(Settings(cascade=False, lag_degrade_s=3600), SHIPPED)
    shown = _recs(
        list(segment_stream(reencode_grey(clip_path("bigbuckbunny"), tmp_path / "c.ts"), 1.0)), "cam-a"
    )
    other = _recs(list(segment_stream(clip_path("bikes"), 1.0)), "cam-b")
    before = [e for rec in shown[:-1] + other[:-1] for e in engine.process(rec).events]
    assert not [e for e in before if e.category == "banned_stream_rebroadcast"]  # nothing taught yet
    ex = example_from_file(clip_path("bigbuckbunny"), "banned_stream_rebroadcast", "bbb")
    assert engine.apply_kb([(b"bbb", encode_example(ex))]).retroactive == 1
    after_a = engine.process(shown[-1]).events  # the end-of-stream record
    after_b = engine.process(other[-1]).events
    retro = [e for e in after_a if "retroactive" in e.coverage.flags]
    assert [e.lifecycle.value for e in retro] == ["started", "ended"]
    assert retro[0].evidence.nearest_examples[0].example_id == "bbb" and retro[0].window.start_s < 2.0
    assert not [e for e in after_b if e.category == "banned_stream_rebroadcast"]


def test_text_examples_catch_what_the_phrase_list_misses():
    from models.kb.base import TEXT
    from models.kb.text import canonical, text_vectors
    from models.lexicon import DEFAULT_LEXICON
    from streaming.kb import example_from_text

    assert canonical("S3ND  b t c, g1ft-c@rds!! ur") == "send bitcoin gift cards your"
    # letters spaced out: wider gaps are word breaks; with none, the split into known words
    assert canonical("c r y p t o  g i v e a w a y") == "crypto giveaway"
    assert canonical("s e n d b t c g e t 2 x") == "send bitcoin get double"
    assert canonical("w i n a n i p h o n e") == "win an iphone"
    assert canonical("I am a big fan, Score 1 2 3") == "i am a big fan score 1 2 3"
    kb = KnowledgeBase()
    kb.add(example_from_text("free gift cards click the link", "text_lexicon", "gift"))
    assert not DEFAULT_LEXICON.matches("SEND GIFT CARDS NOW")  # the miss
    assert kb.match_text(text_vectors(["SEND GIFT CARDS NOW"])) is not None
    assert kb.match_text(text_vectors(["fr33 g1ft c4rds"])) is not None
    assert (
        kb.match_text(text_vectors(["gift wrapping available at the counter", "thanks for watching"])) is None
    )
    kb.add(example_from_text("send gift cards now", "text_lexicon", "ok-here", negative=True))  # allow-listed
    assert kb.match_text(text_vectors(["SEND GIFT CARDS NOW"])) is None
    assert kb.has(TEXT) and kb.examples["gift"].text == "free gift cards click the link"
    with pytest.raises(KbError, match="text example"):
        example_from_text("  !!! ", "text_lexicon")


def test_a_text_example_stored_in_an_earlier_text_space_is_embedded_again_from_its_line(tmp_path):
    """Text examples taught before the space changed (1,408 dims: n-grams and MiniLM, without
    WordLlama) still match after an upgrade, from the topic and from a folder; a stored width
    past the bound, or an old width without its line, is refused."""
    from models.kb.base import TEXT
    from models.kb.text import MAX_TEXT_DIM, TEXT_DIM, text_vectors
    from models.kb.wire import decode_example
    from schemas.kb import KbEntryHead
    from streaming.kb import example_from_text

    line = "free gift cards click the link"
    new = example_from_text(line, "text_lexicon", "gift")
    assert new.vectors.shape == (1, TEXT_DIM) and TEXT_DIM == 1408 + 256

    def stored(eid: str, dim: int, text: str) -> bytes:  # a topic record as an earlier version wrote it
        head = KbEntryHead.model_construct(  # unchecked: a hostile writer's head too
            example_id=eid, category="text_lexicon", count=1, dim=dim, modality=TEXT, text=text
        )
        body = np.full(dim, dim**-0.5, "<f4").tobytes() + np.zeros(1, "<i4").tobytes()
        js = head.model_dump_json().encode()
        return b"GWK1" + len(js).to_bytes(4, "big") + js + body

    np.testing.assert_array_equal(decode_example(b"gift", stored("gift", 1408, line)).vectors, new.vectors)
    for eid, dim, text in (("wide", MAX_TEXT_DIM + 1, line), ("bare", 1408, "")):
        with pytest.raises(KbError, match=r"dims|bad head"):
            decode_example(eid.encode(), stored(eid, dim, text))
    kb = KnowledgeBase()  # a folder written by the earlier version: its npz holds 1,408-wide vectors
    kb.add(new)
    kb.save(tmp_path / "kb")
    npz = tmp_path / "kb" / "gift.npz"
    with open(npz, "wb") as f:
        np.savez(f, vectors=np.full((1, 1408), 1408**-0.5, np.float32), positions=np.zeros(1, np.int32))
    manifest = json.loads((tmp_path / "kb" / "kb.json").read_text())
    manifest["examples"][0]["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    (tmp_path / "kb" / "kb.json").write_text(json.dumps(manifest))
    back = KnowledgeBase.load(tmp_path / "kb")
    np.testing.assert_array_equal(back.examples["gift"].vectors, new.vectors)
    assert back.match_text(text_vectors(["SEND GIFT CARDS NOW"])) is not None


def test_a_taught_line_reaches_the_live_path_through_the_cascade():
    """A scam caption outside the phrase list: no event without the base; with one taught line,
    the cascade's OCR lines match it and an event of the line's category opens over the caption,
    citing the example (text_lexicon, or the operator's own category instead of it)."""
    from models.registry import SHIPPED
    from schemas.settings import Settings
    from streaming.kb import example_from_text
    from streaming.pipeline import LivePath, run_segments
    from streaming.synth import Encoding, Scenario, encode_segments
    from streaming.synth.scenario import Scene, TextOverlay

    caption = TextOverlay(start_s=2.0, end_s=6.0, text="SEND GIFT CARDS NOW", y=0.26, size=0.106)
    enc = Encoding(width=640, height=360, gop_s=1.0, segment_s=1.0)
    scene = Scene(start_s=0, kind="photo", source="coffee", motion="pan")
    sc = Scenario(name="t", seed=5, duration_s=8.0, encoding=enc, scenes=(scene,), overlays=(caption,))
    _, segs = encode_segments(sc)
    found = {}
    for taught in ("", "text_lexicon", "gift_card_scam_v2"):
        kb = KnowledgeBase()
        if taught:
            kb.add(example_from_text("free gift cards click the link", taught, "gift"))
        live = LivePath.load(Settings(), SHIPPED, kb=kb)
        found[taught] = [e for r in run_segments(live.session("cam"), segs) for e in r.events
                         if e.category in ("text_lexicon", "gift_card_scam_v2")]  # fmt: skip
    assert not found[""]
    for cat in ("text_lexicon", "gift_card_scam_v2"):
        assert {e.category for e in found[cat]} == {cat}
        first = found[cat][0]
        assert 1.5 <= first.window.start_s <= 6.0 and first.kb_version
        assert [n.example_id for n in first.evidence.nearest_examples][:1] == ["gift"]


def test_an_example_over_the_topic_record_limit_is_refused_before_sending():
    """A clip whose entry would not fit one record of gopwatch.kb gets a clear error, not a
    broker rejection (no broker is needed to refuse it)."""
    import asyncio

    from consumers.kbtopic import publish_example
    from schemas.settings import Settings

    ex = Example("long-clip", "banned_stream_rebroadcast", _unit(1000))  # 256 kB of vectors
    with pytest.raises(KbError, match=r"over the gopwatch\.kb record limit"):
        asyncio.run(publish_example(Settings(max_segment_bytes=64 * 1024), ex))


def test_the_phrase_list_matches_whole_words_run_together_but_not_inside_longer_words():
    """OCR drops spaces inside captions ("FREECRYPTO GIVEAWAY" from a real read of "FREE CRYPTO
    GIVEAWAY"); a phrase's words may run together, never into a longer word."""
    from models.lexicon import DEFAULT_LEXICON

    assert DEFAULT_LEXICON.matches("FREECRYPTO GIVEAWAY") == ("free crypto",)
    assert DEFAULT_LEXICON.matches("sendbtc to get 2x") == ("send btc",)
    assert DEFAULT_LEXICON.matches("Free   Crypto!") == ("free crypto",)
    for benign in ("carefree cryptography", "blink in biology", "resend btcpay invoice", "free cryptos"):
        assert DEFAULT_LEXICON.matches(benign) == (), benign


def test_a_negative_at_least_as_close_allow_lists_a_passing_positive_in_its_own_space_only():
    from models.kb.base import Nearest
    from models.kb.match import allowed_by

    rows = [
        (Nearest("bbb", "banned", 0.90, False, True), "visual"),
        (Nearest("intro", "banned", 0.90, True, False), "visual"),  # as close: the allow-list wins
        (Nearest("song", "banned_song", 0.80, False, True), "audio"),  # no negative in its space
        (Nearest("weak", "banned", 0.50, False, False), "visual"),  # under its threshold: no decision
        (Nearest("line", "text_lexicon", 0.70, False, True), "text"),
        (Nearest("ok-line", "text_lexicon", 0.69, True, False), "text"),  # less close: the positive holds
    ]
    assert allowed_by(rows) == {"bbb": "intro"}


def test_a_line_read_again_is_looked_up_not_embedded_again(monkeypatch):
    """The sentence model runs once per line: a re-read line (a scrolled screen) gets the vector
    it got the first time, alone or in a batch, and the batch order is kept."""
    from models.kb import text

    lines = ["send 0.1 btc get 0.2 back", "markers = np.zeros_like(coins)"]
    first = text.minilm_vectors(lines)
    calls = []
    model = text._minilm()
    monkeypatch.setattr(text, "_minilm", lambda: calls.append(1) or model)
    again = text.minilm_vectors([lines[1], lines[0], lines[1]])
    assert not calls
    np.testing.assert_array_equal(again, first[[1, 0, 1]])
    new = text.minilm_vectors([lines[0], "a line never read before"])
    assert len(calls) == 1
    np.testing.assert_allclose(
        new[1], text._minilm().encode(["a line never read before"], normalize_embeddings=True)[0], atol=1e-5
    )


def test_the_engine_loads_its_text_models_before_a_caption_needs_them():
    """A worker's engine loads the OCR models at start, and the sentence models as soon as its
    base has a text example: the first caption of a live stream does not wait seconds for them."""
    from consumers.engine import Engine
    from models.kb.wire import encode_example
    from models.registry import SHIPPED
    from schemas.settings import Settings
    from streaming.kb import example_from_text

    engine = Engine(Settings(workers=0), SHIPPED)
    cascade = engine.live.cascade
    assert cascade is not None and cascade._ocr is not None and cascade._ocr._front is not None
    assert cascade._ocr._front._det is not None and cascade._ocr._front._rec_ready
    assert not cascade._text_ready  # an empty base: no sentence model needed
    ex = example_from_text("free gift cards click the link", "text_lexicon", "gift")
    assert engine.apply_kb([(b"gift", encode_example(ex))]).examples == 1
    assert cascade._text_ready
