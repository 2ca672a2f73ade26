"""The knowledge base's index kept up to date change by change, and written beside the base."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from models.kb.base import Example, KnowledgeBase
from models.kb.index import VectorIndex, n_lists
from models.kb.visual import DIM

RNG = np.random.default_rng(11)


def _unit(n: int, dim: int = DIM) -> np.ndarray:
    v = RNG.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("lists", [0, 2])
def test_added_rows_are_found_and_removed_ones_never_again(lists):
    a, b, c = _unit(50), _unit(50), _unit(50)
    idx = VectorIndex(DIM, lists)  # exact, or an inverted file trained on the first vectors
    if lists:
        idx.train([("a", a), ("b", b)])
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
    assert kb._index("visual").approximate
    again = KnowledgeBase(examples=dict(kb.examples))
    assert again.prepare(tmp_path) == {"visual": "read"}
    q = kb.examples["e2"].vectors[:5]
    assert again.similarities(q) == kb.similarities(q)
    again.add(Example("e4", "scam", _unit(60)))  # other vectors: another file
    assert KnowledgeBase(examples=dict(again.examples)).prepare(tmp_path) == {"visual": "built, written"}
    for f in tmp_path.glob("*.faiss"):
        f.write_bytes(b"damaged")
    assert KnowledgeBase(examples=dict(kb.examples)).prepare(tmp_path) == {"visual": "built, written"}
    graph = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)  # as an earlier version wrote
    graph.add(np.concatenate([kb.examples[f"e{i}"].vectors for i in range(4)]))
    faiss.write_index(graph, str(tmp_path / f"visual-{kb.content_key('visual')}.faiss"))
    assert KnowledgeBase(examples=dict(kb.examples)).prepare(tmp_path) == {"visual": "built, written"}


def test_an_approximate_index_finds_what_the_exact_one_finds_and_retrains_when_it_has_grown(monkeypatch):
    monkeypatch.setattr("models.kb.index.EXACT_LIMIT", 1000)
    centres = _unit(40)  # clustered, as a base's vectors are (many per clip)

    def vec(n: int) -> np.ndarray:
        v = _unit(n) * 0.3 + centres[RNG.integers(0, 40, n)]
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    examples = [(f"e{i}", vec(100)) for i in range(30)]  # 3,000 vectors: approximate
    ivf = VectorIndex.build(DIM, examples, 3000)
    exact = VectorIndex.build(DIM, examples, 999)
    assert ivf.approximate and not exact.approximate and ivf.index.nlist == n_lists(3000) == 54
    q = np.concatenate([v[:4] for _, v in examples])
    top = lambda idx: [max(h, key=h.get) for h in idx.search(q, k=8)]  # noqa: E731
    assert np.mean(np.array(top(ivf)) == np.array(top(exact))) >= 0.95
    assert VectorIndex.build(DIM, examples, 3000).search(q, 8) == ivf.search(q, 8)  # one base, one index
    assert not ivf.needs_rebuild()
    ivf.add("big", vec(10_000))  # past 4x what the lists were trained on
    assert ivf.needs_rebuild()


def test_an_unwritable_cache_still_builds(tmp_path, monkeypatch):
    monkeypatch.setattr("models.kb.index.EXACT_LIMIT", 10)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    kb = KnowledgeBase()
    kb.add(Example("e", "scam", _unit(30)))
    assert kb.prepare(blocker / "cache") == {"visual": "built (cache not writable)"}
    assert kb.match(kb.examples["e"].vectors[:4]) is not None
