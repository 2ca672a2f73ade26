"""One vector space's FAISS index, kept up to date change by change.

Inner product on unit vectors: exact (``IndexFlatIP``) up to :data:`EXACT_LIMIT` vectors, an
inverted file past it (``IndexIVFFlat``, about sqrt(n) lists, :data:`NPROBE` searched per query):
it trains on a sample and appends cheaply, so a worker's first start onto a large base and a newly
taught example stay quick, where a graph index (HNSW) is slow to build and grow. An added
example's vectors are appended, so teaching one example costs its own vectors, not a rebuild of
the base. A removed or replaced example's rows stay in the index, excluded from every search by an
ID selector, until they are a quarter of it; then the index is rebuilt from the live examples, as
it is when it has grown to :data:`REBUILD_GROWTH` times what its lists were trained on. A built
index can be written to and read from a file, so a worker restarting onto the same base skips the
build.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

EXACT_LIMIT = 200_000  # past this many vectors the index is approximate (an inverted file)
NPROBE = 16  # inverted lists searched per query
TRAIN_PER_LIST = 64  # training vectors per list (a sample of the base)
REBUILD_DEAD = 0.25  # rebuild once removed rows are this share of the index
REBUILD_GROWTH = 4.0  # retrain once the index holds this many times the vectors it was trained on


def n_lists(n: int) -> int:
    """Inverted lists for ``n`` vectors: about sqrt(n), and at least 39 vectors each to train on."""
    return max(1, min(int(np.sqrt(n)), n // 39))


class VectorIndex:
    """Rows of vectors, each owned by an example slot; searches answer per example."""

    def __init__(self, dim: int, lists: int = 0) -> None:
        """Exact with ``lists`` 0, else an inverted file of that many lists, to be :meth:`train`-ed."""
        self.dim = dim
        self.index: faiss.Index = (  # (faiss's wrapper keeps the lists' centroid index alive)
            faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
            if lists
            else faiss.IndexFlatIP(dim)
        )
        self.trained_on = 0  # vectors the lists were trained on
        self.owner = np.zeros(0, np.int64)  # row -> slot
        self.slots: list[str] = []  # slot -> example id
        self.slot_of: dict[str, int] = {}  # live example id -> slot
        self.dead_rows: list[np.ndarray] = []
        self.n_dead = 0
        self._excluded: faiss.IDSelector | None = None  # the dead rows (the selector below points at it)
        self._selector: faiss.IDSelector | None = None

    @classmethod
    def build(cls, dim: int, examples: Iterable[tuple[str, np.ndarray]], size: int) -> VectorIndex:
        """An index of ``examples`` (id, (N, dim) vectors), ``size`` vectors in all: approximate
        past :data:`EXACT_LIMIT`, its lists trained on a fixed sample, so one base gives one index."""
        rows = [(eid, np.ascontiguousarray(v, np.float32).reshape(-1, dim)) for eid, v in examples]
        out = cls(dim, n_lists(size) if size > EXACT_LIMIT else 0)
        if out.approximate:
            out.train(rows)
        for eid, vectors in rows:
            out.add(eid, vectors)
        return out

    def train(self, rows: list[tuple[str, np.ndarray]]) -> None:
        """Train the lists on a seeded sample of ``rows``' vectors, without concatenating them all."""
        starts = np.cumsum([0] + [len(v) for _, v in rows])
        total = int(starts[-1])
        lists = int(self.index.nlist)  # type: ignore[attr-defined]
        pick = np.sort(
            np.random.default_rng(0).choice(total, min(total, TRAIN_PER_LIST * lists), replace=False)
        )
        which = np.searchsorted(starts, pick, side="right") - 1
        sample = np.stack([rows[j][1][p - starts[j]] for p, j in zip(pick, which, strict=True)])
        self.index.train(sample)
        self.trained_on = total

    @property
    def live_rows(self) -> int:
        return int(self.index.ntotal) - self.n_dead

    @property
    def approximate(self) -> bool:
        return isinstance(self.index, faiss.IndexIVF)

    def add(self, eid: str, vectors: np.ndarray) -> None:
        """Append an example's vectors (replacing any earlier vectors under the same id)."""
        self.remove(eid)
        v = np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dim)
        slot = len(self.slots)
        self.slots.append(eid)
        self.slot_of[eid] = slot
        self.owner = np.concatenate([self.owner, np.full(len(v), slot, np.int64)])
        if len(v):
            self.index.add(v)

    def remove(self, eid: str) -> None:
        slot = self.slot_of.pop(eid, None)
        if slot is None:
            return
        rows = np.flatnonzero(self.owner == slot).astype(np.int64)
        if len(rows):
            self.dead_rows.append(rows)
            self.n_dead += len(rows)
            self._selector = None

    def needs_rebuild(self) -> bool:
        """Too many removed rows, or grown: past the exact limit while exact, or past
        :data:`REBUILD_GROWTH` times the training set while approximate (its lists grow long)."""
        total = int(self.index.ntotal)
        limit = REBUILD_GROWTH * self.trained_on if self.approximate else EXACT_LIMIT
        grown = (total if self.approximate else self.live_rows) > limit
        return (total > 0 and self.n_dead > REBUILD_DEAD * total) or grown

    def search(self, queries: np.ndarray, k: int) -> list[dict[str, float]]:
        """Per query, the best similarity to each example among its ``k`` nearest live rows."""
        if self.live_rows == 0 or len(queries) == 0:
            return [{} for _ in range(len(queries))]
        q = np.ascontiguousarray(queries, np.float32)
        k = min(k, self.live_rows)
        if self.n_dead and self._selector is None:
            self._excluded = faiss.IDSelectorBatch(np.concatenate(self.dead_rows))
            self._selector = faiss.IDSelectorNot(self._excluded)
        sel = self._selector if self.n_dead else None
        if self.approximate:
            params = faiss.SearchParametersIVF(sel=sel, nprobe=NPROBE)  # type: ignore[call-arg]
            sims, rows = self.index.search(q, k, params=params)
        elif sel is not None:
            sims, rows = self.index.search(q, k, params=faiss.SearchParameters(sel=sel))  # type: ignore[call-arg]
        else:
            sims, rows = self.index.search(q, k)
        out: list[dict[str, float]] = []
        for srow, rrow in zip(sims, rows, strict=True):
            best: dict[str, float] = {}
            for s, r in zip(srow, rrow, strict=True):
                if r < 0:
                    continue
                eid = self.slots[int(self.owner[r])]
                if s > best.get(eid, -2.0):
                    best[eid] = float(s)
            out.append(best)
        return out

    # --- a file beside the base ---------------------------------------------------------------

    def write(self, path: Path) -> None:
        """The index and its row owners (only a clean index: no removed rows), written atomically."""
        if self.n_dead:
            raise ValueError("write a rebuilt index, not one with removed rows")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = path.with_suffix(".json")
        tmp = path.with_suffix(".tmp")
        faiss.write_index(self.index, str(tmp))
        np.save(path.with_suffix(".owner.npy"), self.owner)
        meta.write_text(json.dumps({"dim": self.dim, "slots": self.slots, "trained_on": self.trained_on}))
        tmp.replace(path)  # last: the index file marks a complete set

    @classmethod
    def read(cls, path: Path, dim: int) -> VectorIndex | None:
        """A written index, or None when it is missing, damaged, of another shape or of a kind this
        version does not build (an HNSW graph written by an earlier one)."""
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            owner = np.load(path.with_suffix(".owner.npy"), allow_pickle=False)
            index = faiss.read_index(str(path))
        except (OSError, ValueError, RuntimeError):
            return None
        if meta.get("dim") != dim or index.d != dim or index.ntotal != len(owner):
            return None
        if not isinstance(index, faiss.IndexIVFFlat | faiss.IndexFlatIP):  # an older kind: rebuild
            return None
        out = cls(dim)
        out.index, out.owner = index, owner.astype(np.int64)
        out.trained_on = int(meta.get("trained_on") or index.ntotal)
        out.slots = [str(s) for s in meta["slots"]]
        out.slot_of = {eid: i for i, eid in enumerate(out.slots)}
        if len(owner) and int(owner.max()) >= len(out.slots):
            return None
        return out
