"""One live stream's whole state, and its snapshot: what lets another worker continue the stream.

A :class:`StreamSession` is the extractor (demuxer and decoder context), the analyzer (sliding window
and open events) and the bookkeeping a hand-over needs. A decoder's context cannot be serialized,
so a snapshot keeps *references* to the segments since the open GOP's keyframe instead: whoever
restores the stream fetches those segments again (they are still in the segments topic), feeds
them to a fresh extractor that decodes them as references without recording what already went out,
and from there produces exactly the records, scores and events the first owner would have. The
rest of the state (the window's student inputs, the open events) is small and stored by value.

Pure: bytes in, bytes out; the Kafka side (which topic, which transaction) is the worker's.
The reference to the previous segment covers the decoder's reorder delay, so segments are expected
to hold at least a few frames; fMP4 streams also keep a reference to their init segment.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from schemas.errors import GopwatchError
from schemas.events import RiskEvent, SegmentRef
from schemas.segment import Container
from streaming.analyzer import StreamAnalyzer
from streaming.errors import MediaError
from streaming.extract import ExtractConfig, GopFeatures, Resume, StreamExtractor

MAGIC = b"GWS1"


class SnapshotError(GopwatchError):
    """A state snapshot that cannot be read (another format, or corrupt)."""


@dataclass(frozen=True, slots=True)
class Fed:
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
    replay: list[Fed]
    init: Fed | None
    pending: Resume | None
    gop_index: int
    last: SegmentRef | None
    last_ingest_ms: int
    skipped_total: int
    open_events: dict[str, Any] = field(default_factory=dict)
    window: list[dict[str, np.ndarray]] = field(default_factory=list)

    @property
    def refs(self) -> list[SegmentRef]:
        """The segments a restore must fetch, in the order it feeds them."""
        return ([self.init.ref] if self.init else []) + [f.ref for f in self.replay]

    def to_bytes(self) -> bytes:
        head = {
            "stream_id": self.stream_id,
            "model_version": self.model_version,
            "replay": [_fed_json(f) for f in self.replay],
            "init": _fed_json(self.init) if self.init else None,
            "pending": asdict(self.pending) if self.pending else None,
            "gop_index": self.gop_index,
            "last": self.last.model_dump() if self.last else None,
            "last_ingest_ms": self.last_ingest_ms,
            "skipped_total": self.skipped_total,
            "open_events": self.open_events,
            "window": len(self.window),
        }
        arrays: dict[str, np.ndarray] = {}
        for i, item in enumerate(self.window):
            for k, v in item.items():
                # the thumbnail is uint8/255 exactly: store the bytes, rebuild the same floats
                arrays[f"{i}.{k}"] = np.rint(v * 255).astype(np.uint8) if k == "thumb" else v
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # uncompressed: zlib took 7 ms and saved 15%
        h = json.dumps(head, separators=(",", ":")).encode()
        return MAGIC + struct.pack(">I", len(h)) + h + buf.getvalue()

    @staticmethod
    def peek(blob: bytes) -> tuple[str, list[SegmentRef]]:
        """The stream id and the segments a restore needs, without decoding the arrays."""
        head, _ = _split(blob)
        try:
            feeds = ([head["init"]] if head["init"] else []) + head["replay"]
            return str(head["stream_id"]), [_fed(d).ref for d in feeds]
        except (ValueError, KeyError, TypeError, struct.error) as e:
            raise SnapshotError(f"corrupt stream snapshot: {type(e).__name__}: {e}") from None

    @classmethod
    def from_bytes(cls, blob: bytes) -> StreamSnapshot:
        head, start = _split(blob)
        try:
            with np.load(io.BytesIO(blob[start:])) as z:
                window = []
                for i in range(int(head["window"])):
                    item = {k: z[f"{i}.{k}"] for k in ("thumb", "maps", "series", "stats")}
                    item["thumb"] = item["thumb"].astype(np.float32) / 255.0
                    window.append(item)
            return cls(
                stream_id=head["stream_id"],
                model_version=head["model_version"],
                replay=[_fed(d) for d in head["replay"]],
                init=_fed(head["init"]) if head["init"] else None,
                pending=Resume(**head["pending"]) if head["pending"] else None,
                gop_index=int(head["gop_index"]),
                last=SegmentRef(**head["last"]) if head["last"] else None,
                last_ingest_ms=int(head["last_ingest_ms"]),
                skipped_total=int(head["skipped_total"]),
                open_events=head["open_events"],
                window=window,
            )
        except (ValueError, KeyError, TypeError, OSError, struct.error) as e:
            raise SnapshotError(f"corrupt stream snapshot: {type(e).__name__}: {e}") from None


def _split(blob: bytes) -> tuple[dict[str, Any], int]:
    """A snapshot's JSON head and the offset where its arrays start."""
    if blob[:4] != MAGIC or len(blob) < 8:
        raise SnapshotError("not a gopwatch stream snapshot (format GWS1)")
    try:
        (n,) = struct.unpack(">I", blob[4:8])
        head = json.loads(blob[8 : 8 + n])
    except (ValueError, struct.error) as e:
        raise SnapshotError(f"corrupt stream snapshot: {type(e).__name__}: {e}") from None
    if not isinstance(head, dict):
        raise SnapshotError("corrupt stream snapshot: its head is not an object")
    return head, 8 + n


def _fed_json(f: Fed) -> dict[str, object]:
    return {"ref": f.ref.model_dump(), "container": f.container.value if f.container else None,
            "frames_before": f.frames_before, "pos": f.pos, "size": f.size}  # fmt: skip


def _fed(d: dict[str, Any]) -> Fed:
    c = d["container"]
    ref = SegmentRef.model_validate(d["ref"])
    return Fed(ref, Container(c) if c else None, int(d["frames_before"]), int(d["pos"]), int(d["size"]))


class StreamSession:
    def __init__(self, analyzer: StreamAnalyzer, extract: ExtractConfig) -> None:
        self.stream_id = analyzer.stream_id
        self.analyzer = analyzer
        self.extractor = StreamExtractor(analyzer.stream_id, extract)
        self.replay: list[Fed] = []  # segments since (the one before) the open GOP's keyframe
        self.init: Fed | None = None
        self.last: SegmentRef | None = None
        self.last_ingest_ms = 0

    def seen(self, ref: SegmentRef) -> bool:
        """Whether ``ref`` is already in this state (at-least-once redelivery after a restore)."""
        last = self.last
        return (
            last is not None
            and (last.topic, last.partition) == (ref.topic, ref.partition)
            and (ref.offset <= last.offset)
        )

    def feed(
        self,
        payload: bytes,
        container: Container | None,
        ref: SegmentRef,
        ingest_ms: int = 0,
        ends_gop: bool = False,
    ) -> list[RiskEvent]:
        """One segment in, the risk events it completes out. ``ends_gop``: the ingest says the
        segment ends a GOP and the next starts with an IDR frame, so its last GOP is scored now
        (see :meth:`StreamExtractor.feed`)."""
        gops = self._feed(payload, container, ref, ends_gop)
        self.last, self.last_ingest_ms = ref, ingest_ms or self.last_ingest_ms
        events: list[RiskEvent] = []
        for g in gops:
            events += self.analyzer.push(g, (ref,)).events
        return events

    def _feed(
        self, payload: bytes, container: Container | None, ref: SegmentRef, ends_gop: bool = False
    ) -> list[GopFeatures]:
        ex = self.extractor
        fed = Fed(ref, container, ex.frames_out, ex.bytes_fed, len(payload))
        before = ex.gop_index
        try:
            gops = ex.feed(payload, container, ends_gop)
        except MediaError:
            self.replay.clear()  # the extractor reset: a restore starts cold, as this one does
            raise
        if self.init is None and ex.container is Container.FMP4:
            self.init = fed
        at = ex.pending()
        if ex.drained:  # nothing carries over: a restore starts cold at the next segment
            self.replay = []
        elif at is not None and at.anchor_pos is not None:  # MPEG-TS: exact, from the keyframe's byte on
            self.replay = [f for f in [*self.replay, fed] if f.pos + f.size > at.anchor_pos]
        else:  # other containers: from the segment before the one the open GOP began in
            self.replay = (self.replay[-1:] if ex.gop_index != before else self.replay) + [fed]
        return gops

    def end(self) -> list[RiskEvent]:
        """End of stream (or idle timeout): the last records and every open event closed."""
        events: list[RiskEvent] = []
        for g in self.extractor.flush():
            events += self.analyzer.push(g).events
        return events + self.analyzer.close()

    # --- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> StreamSnapshot:
        tr = self.analyzer.tracker
        return StreamSnapshot(
            stream_id=self.stream_id,
            model_version=tr.model_version,
            replay=list(self.replay),
            init=self.init if self.init not in self.replay else None,
            pending=self.extractor.pending(),
            gop_index=self.extractor.gop_index,
            last=self.last,
            last_ingest_ms=self.last_ingest_ms,
            skipped_total=self.extractor.skipped_total,
            open_events=tr.state(),
            window=list(self.analyzer.window),
        )

    @classmethod
    def restore(cls, snap: StreamSnapshot, payloads: list[bytes], analyzer: StreamAnalyzer,
                extract: ExtractConfig) -> StreamSession:  # fmt: skip
        """Continue a stream from ``snap``; ``payloads`` are the bytes of ``snap.refs``, in order.

        Raises :class:`SnapshotError` when the snapshot belongs to another model version (its
        window holds another model's inputs): the caller starts the stream afresh instead.
        """
        if snap.model_version != analyzer.tracker.model_version:
            running = analyzer.tracker.model_version
            raise SnapshotError(f"snapshot of model {snap.model_version}, this worker runs {running}")
        if len(payloads) != len(snap.refs):
            raise SnapshotError(f"restore needs {len(snap.refs)} segments, got {len(payloads)}")
        s = cls(analyzer, extract)
        analyzer.window.extend(snap.window)
        analyzer.tracker.load_state(snap.open_events)
        first = snap.init or (snap.replay[0] if snap.replay else None)
        s.extractor.resume(snap.pending, snap.gop_index, first.frames_before if first else 0)
        s.extractor.skipped_total = snap.skipped_total
        feeds = ([snap.init] if snap.init else []) + snap.replay
        anchor = snap.pending.anchor_pos if snap.pending else None
        for f, data in zip(feeds, payloads, strict=True):
            if anchor is not None and f.pos < anchor:  # MPEG-TS: start at the keyframe's PES
                data = data[anchor - f.pos :]
            extra = s._feed(data, f.container, f.ref)
            if extra:  # can only happen when the payloads are not the snapshot's segments
                raise SnapshotError(f"replayed segments completed {len(extra)} record(s) already sent")
        s.replay, s.init = list(snap.replay), snap.init or s.init
        s.last, s.last_ingest_ms = snap.last, snap.last_ingest_ms
        return s
