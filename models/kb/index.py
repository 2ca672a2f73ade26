"""One vector space's FAISS index, kept up to date change by change.

Inner product on unit vectors: exact (``IndexFlatIP``) up to :data:`EXACT_LIMIT` vectors, HNSW
past it. An added example's vectors are appended, so teaching one example costs its own vectors,
not a rebuild of the base (an HNSW build of a million vectors takes minutes). A removed or
replaced example's rows stay in the index, excluded from every search by an ID selector, until
they are a quarter of it; then the index is rebuilt from the live examples. A built index can be
written to and read from a file, so a worker restarting onto the same base skips the build.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

EXACT_LIMIT = 200_000  # past this many vectors the index is approximate (HNSW)
HNSW_M = 32
REBUILD_DEAD = 0.25  # rebuild once removed rows are this share of the index


class VectorIndex:
    """Rows of vectors, each owned by an example slot; searches answer per example."""

    def __init__(self, dim: int, hnsw: bool) -> None:
        self.dim = dim
        self.index: faiss.Index = (
            faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT) if hnsw else faiss.IndexFlatIP(dim)
        )
        self.owner = np.zeros(0, np.int64)  # row -> slot
        self.slots: list[str] = []  # slot -> example id
        self.slot_of: dict[str, int] = {}  # live example id -> slot
        self.dead_rows: list[np.ndarray] = []
        self.n_dead = 0
        self._excluded: faiss.IDSelector | None = None  # the dead rows (the selector below points at it)
        self._selector: faiss.IDSelector | None = None

    @classmethod
    def build(cls, dim: int, examples: Iterable[tuple[str, np.ndarray]], size: int) -> VectorIndex:
        """An index of ``examples`` (id, (N, dim) vectors), ``size`` vectors in all."""
        out = cls(dim, hnsw=size > EXACT_LIMIT)
        for eid, vectors in examples:
            out.add(eid, vectors)
        return out

    @property
    def live_rows(self) -> int:
        return int(self.index.ntotal) - self.n_dead

    @property
    def hnsw(self) -> bool:
        return isinstance(self.index, faiss.IndexHNSWFlat)

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
        """Too many removed rows, or grown past the exact limit while still exact."""
        total = int(self.index.ntotal)
        return (total > 0 and self.n_dead > REBUILD_DEAD * total) or (
            not self.hnsw and self.live_rows > EXACT_LIMIT
        )

    def search(self, queries: np.ndarray, k: int) -> list[dict[str, float]]:
        """Per query, the best similarity to each example among its ``k`` nearest live rows."""
        if self.live_rows == 0 or len(queries) == 0:
            return [{} for _ in range(len(queries))]
        q = np.ascontiguousarray(queries, np.float32)
        k = min(k, self.live_rows)
        if self.n_dead:
            if self._selector is None:
                self._excluded = faiss.IDSelectorBatch(np.concatenate(self.dead_rows))
                self._selector = faiss.IDSelectorNot(self._excluded)
            params = (
                faiss.SearchParametersHNSW(sel=self._selector, efSearch=max(16, k))  # type: ignore[attr-defined]
                if self.hnsw
                else faiss.SearchParameters(sel=self._selector)  # type: ignore[call-arg]
            )
            sims, rows = self.index.search(q, k, params=params)
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
        meta.write_text(json.dumps({"dim": self.dim, "slots": self.slots}))
        tmp.replace(path)  # last: the index file marks a complete set

    @classmethod
    def read(cls, path: Path, dim: int) -> VectorIndex | None:
        """A written index, or None when it is missing, damaged or of another shape."""
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            owner = np.load(path.with_suffix(".owner.npy"), allow_pickle=False)
            index = faiss.read_index(str(path))
        except (OSError, ValueError, RuntimeError):
            return None
        if meta.get("dim") != dim or index.d != dim or index.ntotal != len(owner):
            return None
        out = cls(dim, hnsw=False)
        out.index, out.owner = index, owner.astype(np.int64)
        out.slots = [str(s) for s in meta["slots"]]
        out.slot_of = {eid: i for i, eid in enumerate(out.slots)}
        if len(owner) and int(owner.max()) >= len(out.slots):
            return None
        return out
