"""The knowledge base itself: examples with their vectors, a FAISS index per modality, the match
decision, and a directory form (an index-free manifest plus one vector file per example, each
with its sha256, verified on load).

An example is positive (a risk: find it) or negative (allow-listed, e.g. the platform's own intro
bumper): a stream whose GOPs are closer to a negative than to any positive matches nothing.
``version`` names the set of examples (their ids and contents), so events can say which base
decided them and a replay with the same base gives the same events.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.errors import KbError
from models.kb import audio
from models.kb.index import VectorIndex
from models.kb.landmarks import MAX_MARKS, LandmarkIndex, well_formed
from models.kb.match import MIN_RUN, allowing
from models.kb.text import TEXT_DIM, current
from models.kb.visual import DIM
from models.npz import read_npz

VISUAL, TEXT, AUDIO, LANDMARKS = "visual", "text", "audio", "landmarks"
DIMS = {VISUAL: DIM, TEXT: TEXT_DIM, AUDIO: audio.DIM}  # the vector spaces, each a FAISS index
SPACES = (*DIMS, LANDMARKS)  # and sound's landmarks, in a hash index (models.kb.landmarks)
# similarity thresholds at precision 1.0 (visual, bench/kb.py; audio and landmarks, bench/kb_audio.py)
# and 2 % false positives (text, bench/kb_text.py); a category's own threshold in ``thresholds`` wins
DEFAULT_THRESHOLDS = {VISUAL: 0.70, TEXT: 0.36, AUDIO: 0.95, LANDMARKS: 0.06}

Run = np.ndarray | list[np.ndarray]  # a run of GOPs: one vector each, or each GOP's vectors (N_i, DIM)
CATEGORY = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
EXAMPLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_VECTORS = 20_000  # per example: a 20-minute clip at every 5th frame, four views
MAX_SOUND = 6_000  # audio vectors per example: 10 minutes of sound (9 MB; a record holds 16 MiB)
DEFAULT_THRESHOLD = 0.70  # visual, calibrated by bench/kb.py at precision 1.0 (README)
MANIFEST = "kb.json"


@dataclass(frozen=True, slots=True)
class Example:
    example_id: str
    category: str
    vectors: np.ndarray  # (N, DIM) float32, unit rows
    negative: bool = False
    notes: str = ""
    source_sha256: str = ""
    positions: np.ndarray | None = None  # (N,) the frame each vector came from (alignment)
    modality: str = VISUAL  # which space the vectors are in: visual, text or audio
    text: str = ""  # a text example's line, as the operator gave it
    sound: np.ndarray | None = None  # (M, audio.DIM): a clip's soundtrack, beside its pictures
    marks: np.ndarray | None = None  # (L, 2) int32 landmarks of its sound (an audio example or a clip's)

    def __post_init__(self) -> None:
        if self.modality not in DIMS:
            raise KbError(f"modality {self.modality!r}: one of {', '.join(DIMS)}")
        dim = DIMS[self.modality]
        if not EXAMPLE_ID.match(self.example_id):
            raise KbError(f"example id {self.example_id!r}: letters, digits, '.', '_', '-' (at most 128)")
        if not CATEGORY.match(self.category):
            raise KbError(f"category {self.category!r}: lower-case letters, digits and '_' (2-64)")
        most = MAX_SOUND if self.modality == AUDIO else MAX_VECTORS
        if self.vectors.ndim != 2 or self.vectors.shape[1] != dim or not 0 < len(self.vectors) <= most:
            raise KbError(f"{self.example_id}: vectors must be (1..{most}, {dim}), got {self.vectors.shape}")
        if not np.isfinite(self.vectors).all():
            raise KbError(f"{self.example_id}: vectors hold NaN or infinity")
        if self.sound is not None:
            if self.modality != VISUAL:
                raise KbError(f"{self.example_id}: only a clip (visual) carries a soundtrack")
            s = self.sound
            if s.ndim != 2 or s.shape[1] != audio.DIM or not 0 < len(s) <= MAX_SOUND:
                raise KbError(f"{self.example_id}: sound vectors must be (1..{MAX_SOUND}, {audio.DIM})")
            if not np.isfinite(self.sound).all():
                raise KbError(f"{self.example_id}: sound vectors hold NaN or infinity")
        heard = self.modality == AUDIO or self.sound is not None
        if self.marks is not None and not (heard and well_formed(self.marks)):
            raise KbError(f"{self.example_id}: landmarks must be (1..{MAX_MARKS}, 2) int32, of sound")

    def vectors_in(self, modality: str) -> np.ndarray | None:
        """This example's vectors in a space: its own, or its soundtrack's in the audio space."""
        if modality == self.modality:
            return self.vectors
        return self.sound if modality == AUDIO else self.marks if modality == LANDMARKS else None

    def digest(self) -> str:
        h = hashlib.sha256()
        meta = [self.example_id, self.category, self.negative, self.notes, self.source_sha256]
        if self.modality != VISUAL:
            meta += [self.modality, self.text]
        h.update(json.dumps(meta).encode())
        h.update(np.ascontiguousarray(self.vectors, np.float32).tobytes())
        if self.sound is not None:
            h.update(np.ascontiguousarray(self.sound, np.float32).tobytes())
        if self.marks is not None:
            h.update(np.ascontiguousarray(self.marks, np.int32).tobytes())
        return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Nearest:
    example_id: str
    category: str
    similarity: float
    negative: bool
    passes: bool  # whether this example alone decides a match for the query


@dataclass(frozen=True, slots=True)
class Match:
    """A decided match: the positive example a run of GOPs shows, and the nearest examples."""

    example_id: str
    category: str
    similarity: float  # the run's weakest GOP's similarity to the example
    nearest: tuple[Nearest, ...]
    modality: str = VISUAL  # the space it matched in


@dataclass
class KnowledgeBase:
    thresholds: dict[str, float] = field(default_factory=dict)  # per category; default otherwise
    default_threshold: float = DEFAULT_THRESHOLD
    examples: dict[str, Example] = field(default_factory=dict)
    _indexes: dict[str, VectorIndex | LandmarkIndex] = field(default_factory=dict)  # built on first use
    _version: str | None = None
    _has: dict[str, bool] = field(default_factory=dict)
    # changes arrive from the topic while streams search (engines in threads share one base)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # --- the set ------------------------------------------------------------------------------

    def add(self, ex: Example) -> None:
        """Add or replace an example (same id: replaced)."""
        with self._lock:
            self.examples[ex.example_id] = ex
            for modality, index in self._indexes.items():  # appended, not rebuilt
                vectors = ex.vectors_in(modality)
                if vectors is None:
                    index.remove(ex.example_id)
                else:
                    index.add(ex.example_id, vectors)
            self._version, self._has = None, {}

    def set_thresholds(self, thresholds: dict[str, float]) -> None:
        """Replace the per-category thresholds (``category`` or ``category:<space>``)."""
        with self._lock:
            self.thresholds = dict(thresholds)
            self._version = None

    def remove(self, example_id: str) -> bool:
        with self._lock:
            found = self.examples.pop(example_id, None) is not None
            for index in self._indexes.values():
                index.remove(example_id)
            self._version, self._has = None, {}
            return found

    @property
    def version(self) -> str:
        """12 hex digits naming the examples and thresholds in force ("empty" for none)."""
        with self._lock:
            if self._version is None:
                h = hashlib.sha256()
                for eid in sorted(self.examples):
                    h.update(self.examples[eid].digest().encode())
                h.update(json.dumps(sorted(self.thresholds.items())).encode())
                self._version = h.hexdigest()[:12] if self.examples else "empty"
            return self._version

    def threshold(self, category: str, modality: str = VISUAL) -> float:
        """A category's own threshold (key ``category`` for the visual space, ``category:<space>``
        for the others, whose scores run on other scales), else the space's default."""
        own = self.thresholds.get(category if modality == VISUAL else f"{category}:{modality}")
        default = self.default_threshold if modality == VISUAL else DEFAULT_THRESHOLDS[modality]
        return default if own is None else own

    def vector_count(self, modality: str | None = None) -> int:
        if modality is None:
            return sum(self.vector_count(m) for m in DIMS)
        return sum(len(v) for e in self.examples.values() if (v := e.vectors_in(modality)) is not None)

    def has(self, modality: str) -> bool:
        """Whether any example has vectors in the space (asked per GOP: cached until a change)."""
        if modality not in self._has:
            self._has[modality] = any(e.vectors_in(modality) is not None for e in self.examples.values())
        return self._has[modality]

    # --- search -------------------------------------------------------------------------------

    def _index(self, modality: str) -> VectorIndex | LandmarkIndex:
        """The modality's index: built on first use, kept up to date by :meth:`add` and
        :meth:`remove`, rebuilt when removals have left too many dead rows."""
        index = self._indexes.get(modality)
        if index is None or index.needs_rebuild():
            rows = self._rows(modality)
            index = (LandmarkIndex.build(rows) if modality == LANDMARKS
                     else VectorIndex.build(DIMS[modality], rows, self.vector_count(modality)))  # fmt: skip
            self._indexes[modality] = index
        return index

    def _rows(self, modality: str) -> list[tuple[str, np.ndarray]]:
        rows = ((eid, self.examples[eid].vectors_in(modality)) for eid in sorted(self.examples))
        return [(eid, v) for eid, v in rows if v is not None]

    def content_key(self, modality: str) -> str:
        """16 hex digits naming the vectors in one space (not the thresholds): a built index's name."""
        h = hashlib.sha256(modality.encode())
        for eid in sorted(self.examples):
            if self.examples[eid].vectors_in(modality) is not None:
                h.update(self.examples[eid].digest().encode())
        return h.hexdigest()[:16]

    def prepare(self, cache: Path | None = None) -> dict[str, str]:
        """Build every space's index now (a worker, before it reports ready, so no stream waits on a
        build). With ``cache``, an approximate index is read from there when one was written for
        the same vectors, and written there after a build. Returns how each space got its index."""
        how: dict[str, str] = {}
        with self._lock:
            for modality in SPACES:
                if not self.has(modality):
                    continue
                name = f"{modality}-{self.content_key(modality)}.faiss"
                path = cache / name if cache and modality in DIMS else None  # landmarks: not cached
                cached = VectorIndex.read(path, DIMS[modality]) if path and path.exists() else None
                if cached is not None and set(cached.slots) == {e for e, _ in self._rows(modality)}:
                    self._indexes[modality], how[modality] = cached, "read"
                    continue
                index = self._index(modality)
                how[modality] = "built"
                if path is not None and isinstance(index, VectorIndex) and index.approximate:
                    try:
                        index.write(path)
                        how[modality] = "built, written"
                    except OSError:
                        how[modality] = "built (cache not writable)"
        return how

    def similarities(self, queries: Run, k: int = 64, modality: str = VISUAL) -> list[dict[str, float]]:
        """Per query vector (or a window's landmarks), the best similarity to each example among
        its ``k`` nearest vectors (or the share of its landmarks aligned with the example)."""
        with self._lock:
            index = self._index(modality)
            if isinstance(index, LandmarkIndex):
                return index.search(list(queries), k)
            return index.search(np.asarray(queries), k)

    def per_gop(self, run: Run, modality: str = VISUAL) -> list[dict[str, float]]:
        """:meth:`similarities` per GOP of a run whose GOPs may have several vectors (a picture
        and its inset): each example's best over the GOP's vectors. Landmarks: one array per GOP."""
        if isinstance(run, np.ndarray) or modality == LANDMARKS:
            return self.similarities(run, modality=modality)
        if not run:
            return []
        flat = self.similarities(np.concatenate(run), modality=modality)
        out, at = [], 0
        for views in run:
            merged: dict[str, float] = {}
            for d in flat[at : at + len(views)]:
                for eid, sim in d.items():
                    merged[eid] = max(merged.get(eid, -2.0), sim)
            out.append(merged)
            at += len(views)
        return out

    def nearest(self, queries: Run, k: int = 5, modality: str = VISUAL) -> list[Nearest]:
        """The examples nearest a run of GOP vectors (or text lines), each scored by the weakest."""
        with self._lock:
            return self._rank(self.per_gop(queries, modality), k, modality)

    def _rank(self, per: list[dict[str, float]], k: int, modality: str) -> list[Nearest]:
        """Each example seen by any query, scored by its weakest similarity over the queries."""
        scored = []
        for eid in set().union(*per) if per else set():
            sim = min(p.get(eid, -1.0) for p in per)
            ex = self.examples[eid]
            passes = not ex.negative and sim >= self.threshold(ex.category, modality)
            scored.append(Nearest(eid, ex.category, round(sim, 4), ex.negative, passes))
        scored.sort(key=lambda n: (-n.similarity, n.example_id))
        return scored[:k]

    def match_runs(self, vectors: Run, run: int = MIN_RUN, modality: str = VISUAL) -> list[Match | None]:
        """:meth:`match` for every window of ``run`` consecutive GOPs, with one search."""
        if len(vectors) < run or not self.has(modality):
            return []
        with self._lock:
            per = self.per_gop(vectors, modality)
            return [
                self._decide(self._rank(per[i : i + run], 5, modality), modality)
                for i in range(len(vectors) - run + 1)
            ]

    def decide(self, per: list[dict[str, float]], modality: str = VISUAL) -> Match | None:
        """:meth:`match` for a run whose GOPs were already searched (:meth:`per_gop`)."""
        with self._lock:
            return self._decide(self._rank(per, 5, modality), modality)

    def match(self, run: Run, modality: str = VISUAL) -> Match | None:
        """The decision for a run of consecutive GOPs ((MIN_RUN, DIM) or longer, visual or audio;
        or one array of vectors per GOP): the best positive example every GOP of the run shows
        above its category's threshold, unless a negative example is at least as close."""
        if len(run) < MIN_RUN or not self.has(modality):
            return None
        return self._decide(self.nearest(run, modality=modality), modality)

    def match_text(self, lines: np.ndarray) -> Match | None:
        """The decision for on-screen text: the best (line, positive text example) pair above its
        category's threshold, unless a negative text example is at least as close to that line."""
        if len(lines) == 0 or not self.has(TEXT):
            return None
        best: Match | None = None
        for i in range(len(lines)):
            m = self._decide(self.nearest(lines[i : i + 1], modality=TEXT), TEXT)
            if m is not None and (best is None or m.similarity > best.similarity):
                best = m
        return best

    def _decide(self, near: list[Nearest], modality: str) -> Match | None:
        """The best positive if it passes its threshold and no negative is at least as close."""
        best_pos = next((n for n in near if not n.negative), None)
        if best_pos is None or not best_pos.passes or allowing(best_pos, near) is not None:
            return None
        return Match(best_pos.example_id, best_pos.category, best_pos.similarity, tuple(near), modality)

    # --- directory form -----------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """``kb.json`` (thresholds, examples with their metadata and file sha256) and one
        ``<id>.npz`` per example. Files of removed examples are deleted."""
        folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for eid in sorted(self.examples):
            ex = self.examples[eid]
            path = folder / f"{eid}.npz"
            positions = ex.positions if ex.positions is not None else np.zeros(len(ex.vectors), np.int32)
            arrays: dict[str, np.ndarray] = {"vectors": ex.vectors.astype(np.float32),
                                             "positions": positions.astype(np.int32)}  # fmt: skip
            arrays |= {"sound": ex.sound.astype(np.float32)} if ex.sound is not None else {}
            arrays |= {"marks": ex.marks.astype(np.int32)} if ex.marks is not None else {}
            with open(path, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
            entries.append({
                "id": eid, "category": ex.category, "negative": ex.negative, "notes": ex.notes,
                "source_sha256": ex.source_sha256, "file": path.name, "vectors": len(ex.vectors),
                "modality": ex.modality, "text": ex.text,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            })  # fmt: skip
        for stale in folder.glob("*.npz"):
            if stale.stem not in self.examples:
                stale.unlink()
        manifest = {"format": 1, "dim": DIM, "default_threshold": self.default_threshold,
                    "thresholds": self.thresholds, "version": self.version, "examples": entries}  # fmt: skip
        tmp = folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(folder / MANIFEST)

    @classmethod
    def load(cls, folder: Path) -> KnowledgeBase:
        """A directory base, every file checked against its sha256 (:class:`KbError` otherwise)."""
        path = folder / MANIFEST
        if not path.exists():
            if folder.exists() and not folder.is_dir():
                raise KbError(f"{folder}: not a folder")
            return cls()
        try:
            manifest = json.loads(path.read_text())
            if manifest.get("format") != 1 or manifest.get("dim") != DIM:
                raise KbError(
                    f"{path}: format {manifest.get('format')} dim {manifest.get('dim')}, expected 1 and {DIM}"
                )
            kb = cls(
                thresholds={str(k): float(v) for k, v in manifest.get("thresholds", {}).items()},
                default_threshold=float(manifest.get("default_threshold", DEFAULT_THRESHOLD)),
            )
            for e in manifest["examples"]:
                f = folder / Path(str(e["file"])).name  # never outside the folder
                data = f.read_bytes()
                if hashlib.sha256(data).hexdigest() != e["sha256"]:
                    raise KbError(f"{f}: sha256 does not match the manifest (changed or damaged)")
                z = read_npz(data, 4)
                vectors = z["vectors"].astype(np.float32)
                positions = z.get("positions")
                sound = z["sound"].astype(np.float32) if "sound" in z else None
                marks = z["marks"].astype(np.int32) if "marks" in z else None
                notes, sha = str(e.get("notes", "")), str(e.get("source_sha256", ""))
                modality, text = str(e.get("modality", VISUAL)), str(e.get("text", ""))
                vectors = current(vectors, text) if modality == TEXT else vectors  # an earlier text space
                kb.add(Example(str(e["id"]), str(e["category"]), vectors, bool(e["negative"]), notes, sha,
                               positions, modality, text, sound, marks))  # fmt: skip
        except KbError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as ex:
            raise KbError(f"{folder}: cannot read the knowledge base ({type(ex).__name__}: {ex})") from None
        return kb
