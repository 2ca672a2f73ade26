"""The knowledge base's index kept up to date change by change, and written beside the base."""

from __future__ import annotations

import numpy as np
import pytest

from models.kb.base import Example, KnowledgeBase
from models.kb.index import VectorIndex
from models.kb.visual import DIM

RNG = np.random.default_rng(11)


def _unit(n: int, dim: int = DIM) -> np.ndarray:
    v = RNG.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("hnsw", [False, True])
def test_added_rows_are_found_and_removed_ones_never_again(hnsw):
    idx = VectorIndex(DIM, hnsw=hnsw)
    a, b, c = _unit(50), _unit(50), _unit(50)
    idx.add("a", a)
    idx.add("b", b)
    assert set(idx.search(a[:3], k=8)[0]) >= {"a"}
    assert idx.search(a[:1], k=8)[0]["a"] == pytest.approx(1.0, abs=1e-5)
    idx.remove("a")
    for hit in idx.search(a, k=16):
        assert "a" not in hit
    idx.add("b", c)  # replaced: the old rows are gone, the new ones found
    assert idx.search(b[:1], k=16)[0].get("b", -1) < 0.9
    assert idx.search(c[:1], k=16)[0]["b"] == pytest.approx(1.0, abs=1e-5)
    assert idx.live_rows == 50 and idx.n_dead == 100


def test_many_removed_rows_ask_for_a_rebuild_and_the_base_rebuilds_once():
    kb = KnowledgeBase()
    for i in range(8):
        kb.add(Example(f"e{i}", "scam", _unit(20)))
    first = kb._index("visual")
    kb.add(Example("e8", "scam", _unit(20)))
    assert kb._index("visual") is first and first.index.ntotal == 180  # appended, not rebuilt
    kb.remove("e0")
    kb.remove("e1")
    assert kb._index("visual") is first  # 40 of 180 removed: under a quarter
    kb.remove("e2")
    rebuilt = kb._index("visual")
    assert rebuilt is not first and rebuilt.index.ntotal == 120 and rebuilt.n_dead == 0


def test_an_added_example_matches_without_a_rebuild_and_a_removed_one_stops():
    kb = KnowledgeBase()
    kb.add(Example("bg", "scam", _unit(40)))
    clip = _unit(6)
    assert kb.match(clip) is None
    kb.add(Example("clip", "scam", clip))
    m = kb.match(clip)
    assert m is not None and m.example_id == "clip"
    kb.remove("clip")
    assert kb.match(clip) is None


def test_a_written_index_is_read_back_for_the_same_vectors_only(tmp_path, monkeypatch):
    monkeypatch.setattr("models.kb.index.EXACT_LIMIT", 100)  # approximate past 100 vectors
    kb = KnowledgeBase()
    for i in range(4):
        kb.add(Example(f"e{i}", "scam", _unit(60)))
    assert kb.prepare(tmp_path) == {"visual": "built, written"}
    assert kb._index("visual").hnsw
    again = KnowledgeBase(examples=dict(kb.examples))
    assert again.prepare(tmp_path) == {"visual": "read"}
    q = kb.examples["e2"].vectors[:5]
    assert again.similarities(q) == kb.similarities(q)
    again.add(Example("e4", "scam", _unit(60)))  # other vectors: another file
    assert KnowledgeBase(examples=dict(again.examples)).prepare(tmp_path) == {"visual": "built, written"}
    for f in tmp_path.glob("*.faiss"):
        f.write_bytes(b"damaged")
    assert KnowledgeBase(examples=dict(kb.examples)).prepare(tmp_path) == {"visual": "built, written"}


def test_an_unwritable_cache_still_builds(tmp_path, monkeypatch):
    monkeypatch.setattr("models.kb.index.EXACT_LIMIT", 10)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    kb = KnowledgeBase()
    kb.add(Example("e", "scam", _unit(30)))
    assert kb.prepare(blocker / "cache") == {"visual": "built (cache not writable)"}
    assert kb.match(kb.examples["e"].vectors[:4]) is not None
