"""The worker's per-record processing, without Kafka I/O: records in, events, dead letters and
stream snapshots out. It runs in a worker process (or a thread, with ``workers=0``); the service
routes each stream to one engine, so a stream's state lives in one place and sees its records in
order.

Each stream has a :class:`~streaming.session.StreamSession`. Load shedding is per stream and driven
by lag, the seconds a segment waited between its ingest and its processing (for a live stream, the
seconds of video the worker is behind): over ``lag_degrade_s`` the stream stops decoding
non-reference (B) frames, over 1.5 times that it decodes I-frames only; it steps back one level
under ``lag_degrade_s`` and to full extraction under half of it. Records
made in a degraded mode carry it in their coverage, and so do the events they open or update.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from models.cascade import Cascade
from models.registry import load_student
from models.runtime import StudentRuntime
from schemas.errors import GopwatchError, InvalidMessageError
from schemas.events import Category, CoverageMode, RiskEvent, SegmentRef
from schemas.records import DeadLetter, StreamControl, parse_json
from schemas.segment import RecordKind, SegmentHeaders, headers_to_dict, record_kind
from schemas.settings import Settings
from streaming.analyzer import StreamAnalyzer
from streaming.errors import OversizedInputError
from streaming.extract import ExtractConfig
from streaming.session import SnapshotError, StreamSession, StreamSnapshot
from streaming.tensors import extraction_for

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Rec:
    """A consumed record, as plain data (it crosses process boundaries)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def of(cls, r: object) -> Rec:
        """From an aiokafka ``ConsumerRecord``."""
        hs = tuple((k, v or b"") for k, v in r.headers)  # type: ignore[attr-defined]
        return cls(r.topic, r.partition, r.offset, r.key, r.value, hs)  # type: ignore[attr-defined]

    @property
    def stream_id(self) -> str:
        return (self.key or b"").decode(errors="replace")


@dataclass
class Out:
    """What one record produced."""

    stream_id: str
    events: list[RiskEvent] = field(default_factory=list)
    dead: DeadLetter | None = None
    ingest_ms: int = 0
    ended: bool = False  # the stream's state is gone (end of stream): its snapshot is a tombstone
    outcome: str = "ok"  # ok | dead_letter | duplicate | control
    seconds: float = 0.0  # processing time
    lag_s: float | None = None
    mode: CoverageMode = CoverageMode.FULL
    partition: int | None = None  # of the record (the service fills it in)


# load shedding levels; measured with `gopwatch eval --decoder`: skipping non-reference frames keeps
# the detection quality and saves a quarter of the CPU, dropping residuals alone saves nothing and
# loses photosensitive flashing (its AUC fell from 1.00 to 0.63), so it is not a level
LEVELS = (CoverageMode.FULL, CoverageMode.REFERENCE_FRAMES, CoverageMode.IFRAME_ONLY)


class Engine:
    def __init__(self, settings: Settings, model_dir: Path) -> None:
        self.s = settings
        net, self.card = load_student(model_dir)
        self.runtime = StudentRuntime(net, settings.torch_threads)
        self.thresholds = {Category(c): float(v) for c, v in self.card.thresholds.items()}
        # the cascade reads the decoded I-frame (one RGB conversion per GOP) when a score is uncertain
        self.cascade = Cascade() if settings.cascade else None
        self.extract = extraction_for(net.cfg, ExtractConfig(
            keyframe_width=1280 if self.cascade else 0, max_width=settings.max_width,
            max_height=settings.max_height, decode_budget_s=settings.decode_budget_s,
        ))  # fmt: skip
        self.sessions: dict[str, StreamSession] = {}
        self.level: dict[str, int] = {}

    @property
    def model_version(self) -> str:
        return self.card.version

    def _analyzer(self, stream_id: str) -> StreamAnalyzer:
        return StreamAnalyzer(
            stream_id, self.runtime, self.thresholds, self.card.version, self.s.hysteresis, self.cascade
        )

    def _session(self, stream_id: str) -> StreamSession:
        st = self.sessions.get(stream_id)
        if st is None:
            st = self.sessions[stream_id] = StreamSession(self._analyzer(stream_id), self.extract)
        return st

    # --- records ------------------------------------------------------------------------------

    def process(self, rec: Rec, now_ms: int | None = None) -> Out:
        """One record -> events, or a dead letter with the reason. Never raises for bad input."""
        sid = rec.stream_id
        t0 = time.perf_counter()
        out = Out(sid)
        try:
            if not sid:
                raise InvalidMessageError("record without a stream id key")
            if record_kind(rec.headers) is RecordKind.CONTROL:
                parse_json(StreamControl, rec.value or b"")
                out = self.end(sid)
                out.outcome = "control"
            else:
                out = self._segment(rec, SegmentHeaders.from_kafka(rec.headers), now_ms)
        except (GopwatchError, ValueError) as e:
            out = Out(sid, dead=self._dead(rec, e), outcome="dead_letter")
        out.seconds = time.perf_counter() - t0
        return out

    def _segment(self, rec: Rec, h: SegmentHeaders, now_ms: int | None) -> Out:
        sid = rec.stream_id
        ref = SegmentRef(topic=rec.topic, partition=rec.partition, offset=rec.offset, sequence=h.sequence)
        st = self._session(sid)
        if st.seen(ref):
            return Out(sid, outcome="duplicate")  # redelivered after a restore (at-least-once)
        payload = self.payload(rec, h)
        lag = max(((now_ms or int(time.time() * 1000)) - h.ingest_ms) / 1000, 0.0) if h.ingest_ms else None
        mode = self._shed(sid, st, lag)
        events = st.feed(payload, h.container, ref, h.ingest_ms, h.ends_gop)
        return Out(sid, events, ingest_ms=h.ingest_ms, lag_s=lag, mode=mode)

    def payload(self, rec: Rec, h: SegmentHeaders) -> bytes:
        data = rec.value or b""
        if h.is_claim_check:
            uri = urlparse(h.payload_uri or "")
            if uri.scheme != "file":
                raise InvalidMessageError(f"claim-check scheme {uri.scheme!r} is not fetched by this worker")
            try:
                return Path(uri.path).read_bytes()
            except OSError as e:
                raise InvalidMessageError(f"claim-check payload unreadable: {e.strerror}") from None
        if len(data) > self.s.max_segment_bytes:
            raise OversizedInputError(f"segment of {len(data)} bytes is over max_segment_bytes")
        return data

    def _shed(self, sid: str, st: StreamSession, lag: float | None) -> CoverageMode:
        level = self.level.get(sid, 0)
        limit = self.s.lag_degrade_s
        if lag is not None:
            if lag > 1.5 * limit:
                level = 2
            elif lag > limit:
                level = max(level, 1)
            elif lag < limit / 2:
                level = 0
            elif lag < limit:
                level = min(level, 1)  # step down one level at a time
        self.level[sid] = level
        st.extractor.set_mode(keyframes_only=level == 2, skip_nonref=level == 1)
        return LEVELS[level]

    def end(self, stream_id: str) -> Out:
        """End of stream or idle timeout: close the stream's events and free its state."""
        st = self.sessions.pop(stream_id, None)
        self.level.pop(stream_id, None)
        if st is None:
            return Out(stream_id, ended=True)
        return Out(stream_id, st.end(), ingest_ms=st.last_ingest_ms, ended=True)

    def _dead(self, rec: Rec, e: Exception) -> DeadLetter:
        try:
            headers = headers_to_dict(rec.headers)
        except GopwatchError:
            headers = {k: repr(v) for k, v in rec.headers}
        return DeadLetter(
            stream_id=rec.stream_id or None, source_topic=rec.topic, source_partition=rec.partition,
            source_offset=rec.offset, reason=str(e).splitlines()[0][:500] or type(e).__name__,
            error_class=type(e).__name__, original_headers=headers, payload_size=len(rec.value or b""),
            payload_sha256=hashlib.sha256(rec.value or b"").hexdigest(), failed_at_ms=int(time.time() * 1000),
        )  # fmt: skip

    # --- state --------------------------------------------------------------------------------

    def snapshots(self, stream_ids: list[str]) -> dict[str, bytes]:
        """Current snapshots of the streams that have state (the others have none to send)."""
        return {sid: self.sessions[sid].snapshot().to_bytes() for sid in stream_ids if sid in self.sessions}

    def restore(self, blob: bytes, recs: list[Rec]) -> str:
        """Take over a stream from its snapshot and the records of the segments it references
        (:meth:`StreamSnapshot.peek`); returns its id. Raises SnapshotError or a MediaError."""
        snap = StreamSnapshot.from_bytes(blob)
        payloads = [self.payload(r, SegmentHeaders.from_kafka(r.headers)) for r in recs]
        self.sessions[snap.stream_id] = StreamSession.restore(
            snap, payloads, self._analyzer(snap.stream_id), self.extract
        )
        return snap.stream_id

    def drop(self, stream_ids: list[str]) -> None:
        """Forget streams (their partition went to another worker, which restores them)."""
        for sid in stream_ids:
            self.sessions.pop(sid, None)
            self.level.pop(sid, None)
            if self.cascade is not None:
                self.cascade.forget(sid)

    def streams(self) -> list[str]:
        return list(self.sessions)

    def degraded(self) -> int:
        return sum(1 for v in self.level.values() if v)


__all__ = ["Engine", "Out", "Rec", "SnapshotError"]
