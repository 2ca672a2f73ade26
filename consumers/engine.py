"""The worker's per-record processing, without Kafka I/O: records in, events, dead letters and
stream snapshots out.

An engine runs in a worker process (or a thread, with ``workers=0``); the worker routes each stream
to one engine, so a stream's state lives in one place and sees its records in order. Each stream
is a :class:`~streaming.session.StreamSession` made by the :class:`~streaming.pipeline.LivePath`;
the session also sheds load by the lag of its segments (see
:meth:`~streaming.session.StreamSession.adapt_to_lag`).
"""

from __future__ import annotations

import ctypes
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from consumers.claims import read_claim_check
from models.kb.base import KnowledgeBase
from models.kb.wire import apply_change
from schemas.errors import GopwatchError, InvalidMessageError
from schemas.events import CoverageMode, RiskEvent, SegmentRef
from schemas.records import DeadLetter, StreamControl, parse_json
from schemas.segment import RecordKind, SegmentHeaders, headers_to_dict, record_kind
from schemas.settings import Settings
from streaming.errors import OversizedInputError
from streaming.evidence import Still
from streaming.pipeline import LivePath
from streaming.session import StreamSession, events_of
from streaming.snapshot import StreamSnapshot

Headers = tuple[tuple[str, bytes], ...]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc
        return None


_LIBC = _libc()


@dataclass(frozen=True, slots=True)
class InputRecord:
    """A consumed record as plain data (it crosses process boundaries)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def of(cls, r: object) -> InputRecord:
        """From an aiokafka ``ConsumerRecord``."""
        hs = tuple((k, v or b"") for k, v in r.headers)  # type: ignore[attr-defined]
        return cls(r.topic, r.partition, r.offset, r.key, r.value, hs)  # type: ignore[attr-defined]

    @property
    def stream_id(self) -> str:
        return (self.key or b"").decode(errors="replace")


@dataclass
class RecordResult:
    """What processing one record produced."""

    stream_id: str
    events: list[RiskEvent] = field(default_factory=list)
    stills: list[Still] = field(default_factory=list)  # evidence stills of some of the events
    dead: DeadLetter | None = None
    ingest_ms: int = 0
    ended: bool = False  # the stream's state is gone (end of stream): its snapshot is a tombstone
    outcome: str = "ok"  # ok | dead_letter | duplicate | control
    seconds: float = 0.0  # processing time
    lag_s: float | None = None
    mode: CoverageMode = CoverageMode.FULL
    damaged_frames: int = 0  # in the records it completed: decoded with errors concealed
    new_epoch: str | None = None  # the stream's new epoch, when this segment began one
    epoch_reason: str = ""  # why it began one (for the log)
    evicted: list[RecordResult] = field(default_factory=list)  # streams closed to make room for this one
    partition: int | None = None  # of the record (the worker fills it in)


@dataclass(frozen=True, slots=True)
class KbApplied:
    version: str  # the base's version after the changes
    examples: int
    applied: int
    skipped: list[str]  # one reason per record that could not be read
    retroactive: int = 0  # streams that get a retroactive event
    indexes: dict[str, str] = field(default_factory=dict)  # per space: "built", "read" (prepare)


class Engine:
    def __init__(self, settings: Settings, model_dir: Path) -> None:
        self.settings = settings
        kb = KnowledgeBase.load(settings.kb_dir) if settings.kb_dir is not None else None
        if kb is not None:
            kb.prepare(settings.kb_index_cache)
        self.live = LivePath.load(settings, model_dir, kb=kb)
        if self.live.cascade is not None:  # before the worker is ready, not at the first I-frame
            self.live.cascade.warm()
        self.sessions: dict[str, StreamSession] = {}  # least recently fed first
        self._trimmed_at = 0.0
        self._retro: dict[str, list[RiskEvent]] = {}  # retroactive events, out with the stream's next result

    @property
    def model_version(self) -> str:
        return self.live.model_version

    def apply_kb(self, changes: list[tuple[bytes | None, bytes | None]], prepare: bool = False) -> KbApplied:
        """Records of the ``gopwatch.kb`` topic, in order (:func:`models.kb.wire.apply_change`). A
        record that cannot be read is skipped with its reason. ``prepare``: build (or read) the
        indexes now, as a worker does with the whole base before it reports ready."""
        kb, skipped, applied, added = self.live.kb, [], 0, []
        for key, value in changes:
            try:
                ex = apply_change(kb, key, value)
                if ex is not None and not ex.negative:
                    added.append(ex.example_id)
                applied += 1
            except Exception as e:  # one bad record never stops the others
                skipped.append(f"{(key or b'')[:64]!r}: {e}")
        retro = 0
        for eid in added:  # streams that showed it lately get their event now (retroactive)
            for sid, st in self.sessions.items():
                if st.analyzer is not None and eid in kb.examples:
                    events = st.analyzer.retroactive(eid)
                    self._retro.setdefault(sid, []).extend(events)
                    retro += bool(events)
        indexes = kb.prepare(self.settings.kb_index_cache) if prepare else {}
        if self.live.cascade is not None:  # the first text example brings in the sentence models
            self.live.cascade.warm()
        return KbApplied(kb.version, len(kb.examples), applied, skipped, retro, indexes)

    def _with_retro(self, out: RecordResult) -> RecordResult:
        pending = self._retro.pop(out.stream_id, None)
        if pending:
            out.events = [*pending, *out.events]
        return out

    def _session(self, stream_id: str, evicted: list[RecordResult]) -> StreamSession:
        """The stream's session, most recently used last; a new stream past ``max_streams`` first
        closes the least recently used one (its result goes into ``evicted``)."""
        st = self.sessions.pop(stream_id, None)
        if st is None:
            while len(self.sessions) >= self.settings.max_streams:
                evicted.append(self.end(next(iter(self.sessions))))
            st = self.live.session(stream_id)
        self.sessions[stream_id] = st
        return st

    # --- records ------------------------------------------------------------------------------

    def process(self, rec: InputRecord, now_ms: int | None = None) -> RecordResult:
        """One record -> events, or a dead letter with the reason. Never raises for a record: any
        failure is that record's dead letter, and resets only its stream's decoder."""
        sid = rec.stream_id
        t0 = time.perf_counter()
        evicted: list[RecordResult] = []
        try:
            if not sid:
                raise InvalidMessageError("record without a stream id key")
            if record_kind(rec.headers) is RecordKind.CONTROL:
                parse_json(StreamControl, rec.value or b"")
                out = self.end(sid)
                out.outcome = "control"
            else:
                out = self._segment(rec, SegmentHeaders.from_kafka(rec.headers), now_ms, evicted)
        except Exception as e:
            self._reset_after(sid, e)
            out = RecordResult(sid, dead=dead_letter(rec, e), outcome="dead_letter")
        if out.outcome == "dead_letter":  # a decoder context may have been dropped: trim soon
            self._forget_if_empty(sid)
            self._trim_soon()
        out.evicted = evicted
        out.seconds = time.perf_counter() - t0
        return self._with_retro(out)

    def _forget_if_empty(self, stream_id: str) -> None:
        """A stream that has only ever sent bad records keeps nothing: no state for garbage ids."""
        st = self.sessions.get(stream_id)
        if st is not None and st.is_empty():
            del self.sessions[stream_id]

    def _reset_after(self, stream_id: str, e: Exception) -> None:
        """After a failure the extractor did not handle itself, only that stream's decoder restarts."""
        if not isinstance(e, GopwatchError | ValueError) and stream_id in self.sessions:
            self.sessions[stream_id].reset_extraction()  # MediaErrors reset it themselves

    def _segment(
        self, rec: InputRecord, h: SegmentHeaders, now_ms: int | None, evicted: list[RecordResult]
    ) -> RecordResult:
        sid = rec.stream_id
        ref = SegmentRef(topic=rec.topic, partition=rec.partition, offset=rec.offset, sequence=h.sequence)
        st = self._session(sid, evicted)
        if st.seen(ref):
            return RecordResult(sid, outcome="duplicate")  # redelivered after a restore (at-least-once)
        payload = self.payload(rec, h)
        admission = st.admit(h.sequence, h.media_start_s, h.media_end_s, h.epoch, payload)
        if admission.duplicate:
            st.last = ref
            return RecordResult(sid, outcome="duplicate")  # the publisher sent it twice
        lag = max(((now_ms or int(time.time() * 1000)) - h.ingest_ms) / 1000, 0.0) if h.ingest_ms else None
        mode = st.adapt_to_lag(lag, self.settings.lag_degrade_s)
        try:
            scored = st.feed(payload, h.container, ref, h.ingest_ms, h.ends_gop, admission.position)
        except Exception as e:  # the events a new epoch closed still go out, with the dead letter
            self._reset_after(sid, e)
            dead = dead_letter(rec, e)
            return RecordResult(
                sid, list(admission.closed), dead=dead, outcome="dead_letter", new_epoch=admission.epoch,
                epoch_reason=admission.reason,
            )  # fmt: skip
        damaged = sum(sc.gop.damaged_frames for sc in scored)
        events = [*admission.closed, *events_of(scored)]
        stills = [x for sc in scored for x in sc.stills]
        return RecordResult(
            sid, events, stills, ingest_ms=h.ingest_ms, lag_s=lag, mode=mode, damaged_frames=damaged,
            new_epoch=admission.epoch, epoch_reason=admission.reason,
        )  # fmt: skip

    def payload(self, rec: InputRecord, h: SegmentHeaders) -> bytes:
        data = rec.value or b""
        s = self.settings
        if h.is_claim_check:
            return read_claim_check(h.payload_uri or "", s.claim_check_root, s.max_segment_bytes,
                                    s.claim_check_prefixes, s.claim_check_timeout_s)  # fmt: skip
        if len(data) > s.max_segment_bytes:
            raise OversizedInputError(f"segment of {len(data)} bytes is over max_segment_bytes")
        return data

    def end(self, stream_id: str) -> RecordResult:
        """End of stream, idle timeout or eviction: close the stream's events and free its state."""
        st = self.sessions.pop(stream_id, None)
        if st is None:
            return RecordResult(stream_id, ended=True)
        ending = st.end()
        stills = [x for sc in ending.scored for x in sc.stills]
        out = RecordResult(stream_id, ending.events, stills, ingest_ms=st.last_ingest_ms, ended=True)
        self._trim_soon()
        return self._with_retro(out)

    def _trim_soon(self) -> None:
        """Give freed memory back after streams end or decoders restart: at once when no stream is
        left, else at most once a second (a trim walks the heap)."""
        now = time.monotonic()
        if not self.sessions or now - self._trimmed_at > 1.0:
            self._trimmed_at = now
            self.release_memory()

    # --- state --------------------------------------------------------------------------------

    def snapshots(self, stream_ids: list[str]) -> dict[str, bytes]:
        """Current snapshots of the streams that have state (the others have none to send)."""
        return {sid: self.sessions[sid].snapshot().to_bytes() for sid in stream_ids if sid in self.sessions}

    def restore(self, blob: bytes, recs: list[InputRecord]) -> str:
        """Take over a stream from its snapshot and the records of the segments it references
        (:meth:`StreamSnapshot.peek`); returns its id. Raises a SnapshotError or a MediaError."""
        snap = StreamSnapshot.from_bytes(blob)
        payloads = [self.payload(r, SegmentHeaders.from_kafka(r.headers)) for r in recs]
        analyzer = self.live.analyzer(snap.stream_id)
        self.sessions[snap.stream_id] = StreamSession.restore(snap, payloads, analyzer, self.live.extract)
        return snap.stream_id

    def drop(self, stream_ids: list[str]) -> None:
        """Forget streams (their partition went to another worker, which restores them)."""
        for sid in stream_ids:
            self.sessions.pop(sid, None)
            if self.live.cascade is not None:
                self.live.cascade.forget(sid)
        self._trim_soon()

    def release_memory(self) -> None:
        """Hand the heap that ended streams freed back to the OS: glibc keeps freed memory in its
        arenas (one per thread that allocated), so without this RSS never comes down."""
        if _LIBC is not None:
            _LIBC.malloc_trim(0)

    def streams(self) -> list[str]:
        return list(self.sessions)

    def degraded(self) -> int:
        return sum(1 for st in self.sessions.values() if st.mode is not CoverageMode.FULL)


def dead_letter(rec: InputRecord, e: Exception) -> DeadLetter:
    """``rec``'s dead letter: where it came from, what was wrong in one line, its headers."""
    try:
        headers = headers_to_dict(rec.headers)
    except GopwatchError:
        headers = {k: repr(v) for k, v in rec.headers}
    return DeadLetter(
        stream_id=rec.stream_id or None, source_topic=rec.topic, source_partition=rec.partition,
        source_offset=rec.offset, reason=reason_line(e),
        error_class=type(e).__name__, original_headers=headers, payload_size=len(rec.value or b""),
        payload_sha256=hashlib.sha256(rec.value or b"").hexdigest(), failed_at_ms=int(time.time() * 1000),
    )  # fmt: skip


def reason_line(e: Exception) -> str:
    """One line that says what was wrong: for a pydantic error its first failing field and why,
    not the line "1 validation error for X" that ``str`` starts with."""
    if isinstance(e, ValidationError) and e.errors():
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "value"
        return f"{e.title} {where}: {err['msg']}"[:500]
    text = str(e).splitlines()[0] if str(e) else ""
    return text[:500] or type(e).__name__
