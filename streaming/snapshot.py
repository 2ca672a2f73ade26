"""A stream's state as bytes (format ``GWS1``): what lets another worker continue the stream.

A decoder's context cannot be serialized, so a snapshot keeps *references* to the segments since
the open GOP's keyframe instead (see :mod:`streaming.session`), and with a knowledge base to the
earlier segments whose sound is still needed (``heard``); the rest of the state (the window's
student inputs, the open events, the knowledge base's last GOPs) is small and stored by value.
Layout: ``GWS1``, a 4-byte big-endian length, a JSON head, then the arrays as an uncompressed
``.npz``.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from models.npz import read_npz
from schemas.events import SegmentRef
from schemas.segment import Container
from streaming.errors import SnapshotError
from streaming.extract import Resume
from streaming.kb import RingEntry

MAGIC = b"GWS1"
MAX_WINDOW = 64  # GOPs: the largest window a student declares
MAX_CASCADE_LINES = 32  # text lines the cascade may remember of a stream
MAX_HEARD = 16  # earlier segments referenced for their sound (StreamSession.heard keeps no more)
MAX_REPLAY = 32  # segments of the open GOP a snapshot references (a longer GOP is handed over cold)
MAX_RING = 8  # knowledge-base ring entries a snapshot carries (the last run of GOPs but one)
MAX_ARRAYS = 4 * MAX_WINDOW + 2 * MAX_CASCADE_LINES + 3 * MAX_RING  # entries of the arrays' .npz


@dataclass(frozen=True, slots=True)
class FedSegment:
    """A segment the session consumed, as a restore needs to feed it again."""

    ref: SegmentRef
    container: Container | None
    frames_before: int  # the extractor's frame clock before it (Annex-B has no timestamps)
    pos: int = 0  # MPEG-TS: the stream offset of its first byte
    size: int = 0


@dataclass
class StreamSnapshot:
    stream_id: str
    model_version: str
    replay: list[FedSegment]
    init: FedSegment | None
    pending: Resume | None
    gop_index: int
    last: SegmentRef | None
    last_ingest_ms: int
    skipped_total: int
    open_events: dict[str, Any] = field(default_factory=dict)
    window: list[dict[str, np.ndarray]] = field(default_factory=list)
    continuity: dict[str, Any] = field(default_factory=dict)  # epoch and last segment (StreamSession)
    cascade: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None  # models.cascade.Cascade.memory
    heard: list[FedSegment] = field(default_factory=list)  # earlier segments the audio tap must hear again
    ring: list[RingEntry] = field(default_factory=list)  # the knowledge base's last GOPs (StreamMatcher.tail)

    @property
    def refs(self) -> list[SegmentRef]:
        """The segments a restore must fetch, in the order it feeds them."""
        return ([self.init.ref] if self.init else []) + [f.ref for f in self.heard + self.replay]

    def to_bytes(self) -> bytes:
        head = {
            "stream_id": self.stream_id,
            "model_version": self.model_version,
            "replay": [_fed_to_json(f) for f in self.replay],
            "heard": [_fed_to_json(f) for f in self.heard],
            "init": _fed_to_json(self.init) if self.init else None,
            "pending": asdict(self.pending) if self.pending else None,
            "gop_index": self.gop_index,
            "last": self.last.model_dump() if self.last else None,
            "last_ingest_ms": self.last_ingest_ms,
            "skipped_total": self.skipped_total,
            "open_events": self.open_events,
            "window": len(self.window),
            "continuity": self.continuity,
            "cascade": self.cascade[0] if self.cascade else None,
            "ring": [[a, b, h is not None, m is not None] for a, b, _, h, m in self.ring],
        }
        arrays: dict[str, np.ndarray] = {}
        for i, item in enumerate(self.window):
            for k, v in item.items():
                # the thumbnail is uint8/255 exactly: store the bytes, rebuild the same floats
                arrays[f"{i}.{k}"] = np.rint(v * 255).astype(np.uint8) if k == "thumb" else v
        for k, v in (self.cascade[1] if self.cascade else {}).items():
            arrays[f"cascade.{k}"] = v
        for i, (_, _, pic, heard, marks) in enumerate(self.ring):
            arrays |= {f"ring.{i}.pic": pic} | ({f"ring.{i}.heard": heard} if heard is not None else {})
            arrays |= {f"ring.{i}.marks": marks} if marks is not None else {}
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # uncompressed: zlib costs more than it saves
        h = json.dumps(head, separators=(",", ":")).encode()
        return MAGIC + struct.pack(">I", len(h)) + h + buf.getvalue()

    @staticmethod
    def peek(blob: bytes) -> tuple[str, list[SegmentRef]]:
        """The stream id and the segments a restore needs, without decoding the arrays."""
        head, _ = _split(blob)
        try:
            feeds = ([head["init"]] if head["init"] else []) + _heard(head) + _replay(head)
            return str(head["stream_id"]), [_fed_from_json(d).ref for d in feeds]
        except (ValueError, KeyError, TypeError, OverflowError, struct.error) as e:
            raise SnapshotError(f"corrupt stream snapshot: {type(e).__name__}: {e}") from None

    @classmethod
    def from_bytes(cls, blob: bytes) -> StreamSnapshot:
        head, start = _split(blob)
        try:
            n = int(head["window"])
            if not 0 <= n <= MAX_WINDOW:
                raise ValueError(f"a window of {n} GOPs")
            z = read_npz(blob[start:], MAX_ARRAYS)
            window = []
            for i in range(n):
                item = {k: z[f"{i}.{k}"] for k in ("thumb", "maps", "series", "stats")}
                item["thumb"] = item["thumb"].astype(np.float32) / 255.0
                window.append(item)
            memo = head.get("cascade")
            cascade = None
            if memo is not None:
                names = [k for k in z if k.startswith("cascade.")][: 2 * MAX_CASCADE_LINES]
                cascade = (dict(memo), {k.removeprefix("cascade."): z[k] for k in names})
            ring = _ring(head, z)
            return cls(
                stream_id=head["stream_id"],
                model_version=head["model_version"],
                replay=[_fed_from_json(d) for d in _replay(head)],
                init=_fed_from_json(head["init"]) if head["init"] else None,
                pending=Resume(**head["pending"]) if head["pending"] else None,
                gop_index=int(head["gop_index"]),
                last=SegmentRef(**head["last"]) if head["last"] else None,
                last_ingest_ms=int(head["last_ingest_ms"]),
                skipped_total=int(head["skipped_total"]),
                open_events=head["open_events"],
                window=window,
                continuity=dict(head.get("continuity") or {}),
                cascade=cascade,
                heard=[_fed_from_json(d) for d in _heard(head)],
                ring=ring,
            )
        except (ValueError, KeyError, TypeError, OverflowError, struct.error) as e:  # Overflow: JSON Infinity
            raise SnapshotError(f"corrupt stream snapshot: {type(e).__name__}: {e}") from None


def _split(blob: bytes) -> tuple[dict[str, Any], int]:
    """A snapshot's JSON head and the offset where its arrays start."""
    if blob[:4] != MAGIC or len(blob) < 8:
        raise SnapshotError("not a gopwatch stream snapshot (format GWS1)")
    try:
        (n,) = struct.unpack(">I", blob[4:8])
        head = json.loads(blob[8 : 8 + n])
    except (ValueError, struct.error, RecursionError) as e:  # RecursionError: JSON nested too deep
        raise SnapshotError(f"corrupt stream snapshot: {type(e).__name__}: {e}") from None
    if not isinstance(head, dict):
        raise SnapshotError("corrupt stream snapshot: its head is not an object")
    return head, 8 + n


def _ring(head: dict[str, Any], z: dict[str, np.ndarray]) -> list[RingEntry]:
    """The ring entries a snapshot carries (none before they were stored); their shapes are
    checked by ``StreamMatcher.resume``."""
    rows = _bounded(head.get("ring") or [], "ring", MAX_RING, "GOPs")
    out: list[RingEntry] = []
    for i, (start, end, heard, marks) in enumerate(rows):
        out.append((float(start), float(end), z[f"ring.{i}.pic"], z[f"ring.{i}.heard"] if heard else None,
                    z[f"ring.{i}.marks"] if marks else None))  # fmt: skip
    return out


def _heard(head: dict[str, Any]) -> list[dict[str, Any]]:
    """The head's earlier segments for the audio tap (none in snapshots written before them)."""
    return _bounded(head.get("heard") or [], "heard", MAX_HEARD, "segments")


def _replay(head: dict[str, Any]) -> list[dict[str, Any]]:
    """The head's segments of the open GOP."""
    return _bounded(head["replay"], "replay", MAX_REPLAY, "segments")


def _bounded(value: Any, key: str, most: int, what: str) -> list[Any]:
    """A head's list, refused (ValueError) when it is not one or holds more than ``most``."""
    if not isinstance(value, list) or len(value) > most:
        raise ValueError(f"'{key}' must be a list of at most {most} {what}")
    return value


def _fed_to_json(f: FedSegment) -> dict[str, object]:
    return {"ref": f.ref.model_dump(), "container": f.container.value if f.container else None,
            "frames_before": f.frames_before, "pos": f.pos, "size": f.size}  # fmt: skip


def _fed_from_json(d: dict[str, Any]) -> FedSegment:
    c = d["container"]
    ref = SegmentRef.model_validate(d["ref"])
    return FedSegment(
        ref, Container(c) if c else None, int(d["frames_before"]), int(d["pos"]), int(d["size"])
    )
