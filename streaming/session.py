"""One live stream's whole state, and the one way segments become scored GOPs and events.

A :class:`StreamSession` is the extractor (demuxer and decoder context), the analyzer (sliding
window and open events), the stream's extraction mode under load, and the bookkeeping a hand-over
needs. The worker's engine feeds it one record at a time; ``gopwatch analyze``, ``eval`` and the
training corpus feed it a file's segments through :mod:`streaming.pipeline`. A session without an
analyzer only extracts (training corpora are built before there is a model).

Hand-over: a decoder's context cannot be serialized, so a snapshot (:mod:`streaming.snapshot`)
keeps *references* to the segments since the open GOP's keyframe: whoever restores the stream
fetches those segments again, feeds them to a fresh extractor that decodes them as references
without recording what already went out, and from there produces exactly the records, scores and
events the first owner would have. The reference to the previous segment covers the decoder's
reorder delay, so segments are expected to hold at least a few frames; fMP4 streams also keep a
reference to their init segment. With a knowledge base, the segments whose sound later GOPs still
need are referenced as well (``heard``): the new owner's audio tap hears them again and holds
exactly the samples the first owner's held.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from schemas.events import CoverageMode, RiskEvent, SegmentRef
from schemas.segment import Container
from streaming.analyzer import Scored, StreamAnalyzer
from streaming.audio import AudioTap
from streaming.errors import CorruptSegmentError, MediaError, SnapshotError
from streaming.extract import ExtractConfig, GopFeatures, StreamExtractor
from streaming.snapshot import MAX_HEARD, MAX_REPLAY, FedSegment, StreamSnapshot
from streaming.units import sniff_container

BACKWARDS_S = 1.0  # a segment starting this far before the last one ended: the timeline restarted
HEARD_MARGIN_S = 0.5  # sound re-fed before what the tap holds: a PES cut off, a decoder warming up
GAP_S = 60.0  # a segment starting this far after the last one ended: the timeline jumped


@dataclass(frozen=True, slots=True)
class Position:
    """Where a segment sits in its stream: what the next one is compared with."""

    sequence: int
    media_end_s: float
    digest: str


@dataclass(frozen=True, slots=True)
class Admission:
    """How a segment relates to the stream so far (:meth:`StreamSession.admit`)."""

    position: Position
    duplicate: bool = False  # the same sequence and bytes again (a publisher's retry): skip it
    closed: tuple[RiskEvent, ...] = ()  # events a new epoch closed
    epoch: str | None = None  # the new epoch, when this segment starts one
    reason: str = ""  # why it starts one


# load-shedding levels, cheapest last; dropping residuals alone saves little and loses flashing,
# so it is not a level (README, "The decoder's cheap options")
LEVELS = (CoverageMode.FULL, CoverageMode.REFERENCE_FRAMES, CoverageMode.IFRAME_ONLY)


@dataclass(frozen=True, slots=True)
class Ending:
    """What the end of a stream gives: its last scored records and the events it closes."""

    scored: list[Scored]
    closed: list[RiskEvent]

    @property
    def events(self) -> list[RiskEvent]:
        return events_of(self.scored) + self.closed


def _kind(payload: bytes, container: Container | None) -> Container | None:
    try:
        return container or sniff_container(payload)
    except MediaError:
        return None  # the extractor says why


def events_of(scored: list[Scored]) -> list[RiskEvent]:
    return [e for sc in scored for e in sc.events]


class StreamSession:
    def __init__(
        self, stream_id: str, extract: ExtractConfig, analyzer: StreamAnalyzer | None = None
    ) -> None:
        self.stream_id = stream_id
        self.analyzer = analyzer
        self.extractor = StreamExtractor(stream_id, extract)
        # the sound, for the knowledge base's audio space (MPEG-TS streams, when there is a base)
        self.audio = AudioTap() if analyzer is not None and analyzer.matcher is not None else None
        self.replay: list[FedSegment] = []  # segments since (the one before) the open GOP's keyframe
        self.heard: list[tuple[FedSegment, float]] = []  # MPEG-TS segments the tap heard, and to when
        self.init: FedSegment | None = None
        self.last: SegmentRef | None = None
        self.last_ingest_ms = 0
        self.level = 0  # index into LEVELS
        # continuity: the ingest's epoch, the discontinuities seen inside it, the last segment
        self.ingest_epoch = 0
        self.restarts = 0
        self.last_seq: int | None = None
        self.last_end_s = 0.0
        self.last_digest = ""

    @property
    def mode(self) -> CoverageMode:
        return LEVELS[self.level]

    def seen(self, ref: SegmentRef) -> bool:
        """Whether ``ref`` is already in this state (at-least-once redelivery after a restore)."""
        last = self.last
        return (
            last is not None
            and (last.topic, last.partition) == (ref.topic, ref.partition)
            and (ref.offset <= last.offset)
        )

    @property
    def epoch(self) -> str:
        return f"{self.ingest_epoch}.{self.restarts}" if self.restarts else str(self.ingest_epoch)

    def admit(self, sequence: int, media_start_s: float, media_end_s: float, ingest_epoch: int,
              payload: bytes) -> Admission:  # fmt: skip
        """Place a segment in the stream's timeline before it is fed. A publisher's retry (same
        sequence, same bytes) is a duplicate. A new ingest epoch, or a discontinuity inside one
        (the sequence or the timestamps starting again, or jumping far ahead: an encoder that
        reconnected), begins a new epoch: the open events close, the decoder restarts at the next
        keyframe and the window empties, and the new epoch's event ids cannot collide with the old."""
        at = Position(sequence, media_end_s, hashlib.blake2b(payload, digest_size=16).hexdigest())
        last = self.last_seq
        reason = ""
        if last is None:
            self.ingest_epoch = ingest_epoch
        elif ingest_epoch != self.ingest_epoch:
            reason = f"ingest epoch {self.ingest_epoch} -> {ingest_epoch}"
        elif sequence == last and at.digest == self.last_digest:
            return Admission(at, duplicate=True)
        elif sequence <= last:
            reason = f"sequence {last} -> {sequence}"
        elif media_start_s < self.last_end_s - BACKWARDS_S or media_start_s > self.last_end_s + GAP_S:
            reason = f"media time {self.last_end_s:.3f} s -> {media_start_s:.3f} s"
        if not reason:
            return Admission(at)
        closed = self._analyzer().restart()
        self.restarts = 0 if ingest_epoch != self.ingest_epoch else self.restarts + 1
        self.ingest_epoch = ingest_epoch
        self._analyzer().tracker.epoch = self.epoch
        self.reset_extraction()
        return Admission(at, closed=tuple(closed), epoch=self.epoch, reason=reason)

    def adapt_to_lag(self, lag_s: float | None, limit_s: float) -> CoverageMode:
        """Load shedding: over ``limit_s`` of lag stop decoding non-reference frames, over 1.5
        times it decode I-frames only; step back one level under the limit, to full extraction
        under half of it. Takes effect from the next frame decoded."""
        level = self.level
        if lag_s is not None:
            if lag_s > 1.5 * limit_s:
                level = 2
            elif lag_s > limit_s:
                level = max(level, 1)
            elif lag_s < limit_s / 2:
                level = 0
            else:
                level = min(level, 1)  # one level at a time
        self.level = level
        self.extractor.set_mode(keyframes_only=level == 2, skip_nonref=level == 1)
        return LEVELS[level]

    def feed(
        self,
        payload: bytes,
        container: Container | None,
        ref: SegmentRef,
        ingest_ms: int = 0,
        ends_gop: bool = False,
        at: Position | None = None,
    ) -> list[Scored]:
        """One segment in, the GOPs it completes out, scored, with the events they open, update
        or close. ``ends_gop``: the ingest says the segment ends a GOP and the next starts with an
        IDR frame, so its last GOP is scored now (see :meth:`StreamExtractor.feed`). ``at``: its
        place in the timeline (from :meth:`admit`), remembered once it was fed without error."""
        analyzer = self._analyzer()
        gops = self.extract(payload, container, ref, ends_gop)
        self.last, self.last_ingest_ms = ref, ingest_ms or self.last_ingest_ms
        if at is not None:
            self.last_seq, self.last_end_s, self.last_digest = at.sequence, at.media_end_s, at.digest
        scored = [analyzer.push(g, (ref,), *self._sound(g)) for g in gops]
        if self.audio is not None and gops:
            self.audio.forget_before(gops[-1].end_s)
        return scored

    def _sound(self, g: GopFeatures) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The audio vectors and the landmarks of the sound before the GOP's end (None, None
        without a base or sound)."""
        if self.audio is None:
            return None, None
        return self.audio.vectors(g.end_s), self.audio.landmarks(g.end_s)

    def hear(self, fed: FedSegment, payload: bytes) -> None:
        """A segment's sound into the tap, remembered (with how far the sound reached) while the
        tap may still need it after a hand-over."""
        tap = self.audio
        assert tap is not None
        tap.feed(payload)
        if tap.heard_s is None:  # no sound yet: nothing a new owner must hear again
            self.heard.clear()
            return
        self.heard.append((fed, tap.heard_s))
        need = self._heard_from()
        while self.heard and (self.heard[0][1] <= need or len(self.heard) > MAX_HEARD):
            self.heard.pop(0)

    def _heard_from(self) -> float:
        """Media time from which the tap's sound must be heard again by a new owner."""
        tap = self.audio
        return tap.start_s - HEARD_MARGIN_S if tap is not None and tap.end_s > tap.start_s else -1.0

    def extract(
        self,
        payload: bytes,
        container: Container | None,
        ref: SegmentRef,
        ends_gop: bool = False,
        hear: bool = True,
    ) -> list[GopFeatures]:
        """One segment in, the GOP records it completes out (no scoring). A segment that carries
        no video at all is corrupt: the stream's decoder restarts at the next good segment.
        ``hear``: feed its sound to the audio tap too (a restore feeds the tap itself)."""
        ex = self.extractor
        fed = FedSegment(ref, container, ex.frames_out, ex.bytes_fed, len(payload))
        before, seen = ex.gop_index, ex.video_seen()
        if hear and self.audio is not None and _kind(payload, container or ex.container) is Container.MPEGTS:
            self.hear(fed, payload)  # first: the sound up to the segment's end, for its GOPs
        try:
            gops = ex.feed(payload, container, ends_gop)
            if ex.video_seen() == seen:
                ex.reset()
                raise CorruptSegmentError(f"no video in the segment ({len(payload)} bytes)")
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

    def is_empty(self) -> bool:
        """Nothing worth keeping: no decoder context, no window, no open event, no position."""
        analyzer = self.analyzer
        return (
            not self.extractor.has_context
            and self.last_seq is None
            and (analyzer is None or (not analyzer.window and not analyzer.tracker.open))
        )

    def reset_extraction(self) -> None:
        """Forget the decoder context after a failure the extractor did not handle itself: the
        stream continues at its next keyframe, with its window and open events."""
        self.extractor.reset()
        self.replay.clear()
        if self.audio is not None:
            self.audio.reset()
            self.heard.clear()

    def flush(self) -> list[GopFeatures]:
        """End of stream, extraction only: the records the decoder still held."""
        return self.extractor.flush()

    def end(self) -> Ending:
        """End of stream (or idle timeout): the last records scored and every open event closed."""
        analyzer = self._analyzer()
        gops = self.flush()
        if self.audio is not None:
            self.audio.flush()
        scored = [analyzer.push(g, (), *self._sound(g)) for g in gops]
        return Ending(scored, analyzer.close())

    def _analyzer(self) -> StreamAnalyzer:
        if self.analyzer is None:
            raise TypeError("this session only extracts: it was made without an analyzer")
        return self.analyzer

    # --- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> StreamSnapshot:
        """The stream's state as the next owner needs it. An open GOP of more than
        :data:`MAX_REPLAY` segments (a stream with keyframes minutes apart) is handed over cold:
        the next owner starts at the next keyframe instead of decoding them all again."""
        tracker = self._analyzer().tracker
        need = self._heard_from()
        cold = len(self.replay) > MAX_REPLAY
        return StreamSnapshot(
            stream_id=self.stream_id,
            model_version=tracker.model_version,
            replay=[] if cold else list(self.replay),
            init=self.init if cold or self.init not in self.replay else None,
            pending=None if cold else self.extractor.pending(),
            gop_index=self.extractor.gop_index,
            last=self.last,
            last_ingest_ms=self.last_ingest_ms,
            skipped_total=self.extractor.skipped_total,
            open_events=tracker.state(),
            window=list(self._analyzer().window),
            cascade=cascade.memory(self.stream_id) if (cascade := self._analyzer().cascade) else None,
            heard=[f for f, until in self.heard if until > need and f not in self.replay],
            ring=matcher.tail() if (matcher := self._analyzer().matcher) is not None else [],
            continuity={
                "ingest_epoch": self.ingest_epoch,
                "restarts": self.restarts,
                "last_seq": self.last_seq,
                "last_end_s": self.last_end_s,
                "last_digest": self.last_digest,
            }
            | ({"audio_track": self.audio.track()} if self.audio is not None else {}),
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
        s = cls(snap.stream_id, extract, analyzer)
        c = snap.continuity
        try:
            s.ingest_epoch, s.restarts = int(c.get("ingest_epoch", 0)), int(c.get("restarts", 0))
            s.last_seq = None if c.get("last_seq") is None else int(c["last_seq"])
            s.last_end_s, s.last_digest = float(c.get("last_end_s", 0.0)), str(c.get("last_digest", ""))
        except (TypeError, ValueError) as e:
            raise SnapshotError(f"corrupt stream snapshot: continuity: {e}") from None
        analyzer.tracker.epoch = s.epoch
        analyzer.window.extend(snap.window)
        if snap.ring and analyzer.matcher is not None:  # the knowledge base's last GOPs
            try:
                analyzer.matcher.resume(snap.ring)
            except ValueError as e:
                raise SnapshotError(f"corrupt stream snapshot: {e}") from None
        analyzer.tracker.load_state(snap.open_events)
        if snap.cascade is not None and analyzer.cascade is not None:  # the lines it had read, as it had them
            try:
                analyzer.cascade.recall(snap.stream_id, *snap.cascade)
            except ValueError as e:
                raise SnapshotError(f"corrupt stream snapshot: {e}") from None
        first = snap.init or (snap.replay[0] if snap.replay else None)
        s.extractor.resume(snap.pending, snap.gop_index, first.frames_before if first else 0)
        s.extractor.skipped_total = snap.skipped_total
        n_init = 1 if snap.init else 0
        heard, replayed = payloads[n_init : n_init + len(snap.heard)], payloads[n_init + len(snap.heard) :]
        if s.audio is not None:  # the sound first, whole segments, as the first owner heard it
            track = c.get("audio_track")
            s.audio.follow(track if isinstance(track, dict) else {})
            for f, data in zip(snap.heard + snap.replay, heard + replayed, strict=True):
                if _kind(data, f.container) is Container.MPEGTS:
                    s.hear(f, data)
        feeds = ([snap.init] if snap.init else []) + snap.replay
        anchor = snap.pending.anchor_pos if snap.pending else None
        for f, data in zip(feeds, payloads[:n_init] + replayed, strict=True):
            if anchor is not None and f.pos < anchor:  # MPEG-TS: start at the keyframe's PES
                data = data[anchor - f.pos :]
            extra = s.extract(data, f.container, f.ref, hear=False)
            if extra:  # can only happen when the payloads are not the snapshot's segments
                raise SnapshotError(f"replayed segments completed {len(extra)} record(s) already sent")
        s.replay, s.init = list(snap.replay), snap.init or s.init
        s.last, s.last_ingest_ms = snap.last, snap.last_ingest_ms
        return s
