"""Incremental compressed-domain feature extraction, per stream: segments in, GOP features out.

One :class:`StreamExtractor` per stream keeps the access-unit source (:mod:`streaming.units`) and
the decoder between segments, so a GOP that spans two segments, or a segment cut at any byte,
gives the same features as the whole stream at once. Per GOP, and per ``step_s`` inside longer
GOPs, it yields a :class:`~streaming.gop.GopFeatures` record (built by :mod:`streaming.records`):

* the first frame (the I-frame at a GOP start) as a small RGB thumbnail, the only colour conversion;
* motion vectors on the 16x16 macroblock grid for each frame, list0 (past references) and list1
  (future references, B-frames) kept apart, in pixels (``src - dst``: where the block came from);
* residual maps rebuilt from the vectors (:mod:`streaming.residuals`);
* frame types in display order, packet sizes in decode order (bits per frame).

HEVC has no motion-vector export in FFmpeg: its features carry I-frames and frame statistics only,
with coverage ``no_motion_vectors``. MPEG-4 Part 2 works like H.264.
"""

from __future__ import annotations

import time
from dataclasses import replace

import av

from schemas.segment import Codec, Container
from streaming.errors import CorruptSegmentError, DecodeBudgetExceededError, MediaError, OversizedInputError
from streaming.gop import MAX_FPS, MB, ExtractConfig, GopFeatures, Resume, accumulate_motion
from streaming.media import enable_mv_export, padded_packet, picture_type, starts_with_idr
from streaming.records import RecordBuilder
from streaming.tsdemux import TsDemuxer
from streaming.units import AccessUnit, TsUnits, UnitSource, open_units, sniff_container

_IDR_CODECS = (Codec.H264, Codec.HEVC)  # codecs with IDR pictures: where ``ends_gop`` can hold


class StreamExtractor:
    """Feed one stream's segments in order with :meth:`feed`; call :meth:`flush` at its end."""

    def __init__(self, stream_id: str, config: ExtractConfig | None = None) -> None:
        self.stream_id = stream_id
        self.cfg = config or ExtractConfig()
        self.skipped_total = 0
        self._gop_index = -1
        self._resume: Resume | None = None
        self._records = RecordBuilder(stream_id, self.cfg)
        self._reset()

    # --- state ------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._units: UnitSource | None = None
        self._ctx: av.codec.context.CodecContext | None = None
        self._t0: float | None = None
        self._n = 0  # frames out of the decoder (display order), including skipped ones
        self._seen_key = False
        self._drained = False
        self._records.reset()
        self._pos_by_pts: dict[int, int] = {}  # MPEG-TS: PES offset of recently decoded frames
        self._anchor: int | None = None  # offset of the current GOP's keyframe PES

    def reset(self) -> None:
        """Drop the decoder context (after bad input or a hand-over); the next keyframe restarts it."""
        self._resume = None
        self._reset()

    @property
    def has_context(self) -> bool:
        return self._ctx is not None

    @property
    def container(self) -> Container | None:
        return self._units.container if self._units is not None else None

    @property
    def gop_index(self) -> int:
        """Index of the GOP being collected (-1 before the first keyframe)."""
        return self._gop_index

    @property
    def frames_out(self) -> int:
        """Frames out of the decoder so far (display order): the clock of timestamp-less Annex-B."""
        return self._n

    @property
    def bytes_fed(self) -> int:
        """MPEG-TS: bytes of the stream fed since the context began (offsets in :class:`Resume`)."""
        return self._units.bytes_fed if self._units is not None else 0

    @property
    def drained(self) -> bool:
        """Whether the last piece ended a GOP and nothing carries over to the next (no decoder
        state, no open record): a hand-over then needs no earlier segment. Until an IDR access
        unit arrives, what comes is skipped and counted."""
        return self._drained

    def video_seen(self) -> int:
        """Grows with every piece that carries video (see :meth:`UnitSource.video_seen`)."""
        return self._units.video_seen() if self._units is not None else 0

    @property
    def _timestamped(self) -> bool:
        return self._units is not None and self._units.timestamped

    def pending(self) -> Resume | None:
        """Where the record being collected starts, or None: what a snapshot needs to resume."""
        ch = self._records.open
        if ch is None:
            return None
        prog = self._units.program() if self._units is not None else None
        return Resume(
            ch.start_s, ch.gop_index, ch.chunk_index, self._records.skipped, self._anchor,
            (prog[0], prog[1], prog[2].value) if prog and self._anchor is not None else None,
        )  # fmt: skip

    def resume(self, at: Resume | None, gop_index: int, frames_out: int = 0) -> None:
        """Prepare a fresh extractor to continue another one's stream from a snapshot.

        Feed it the segments since the keyframe of the record that was being collected (see
        :mod:`streaming.session`): frames before ``at.start_s`` are decoded as references but not
        recorded (they went out in earlier records), and the record from ``at`` on comes out as
        the interrupted extractor would have produced it. ``at`` None: nothing was pending.
        """
        self._resume = at
        self._gop_index = gop_index if at is None else at.gop_index - 1
        self._n = frames_out
        if at is not None and at.anchor_pos is not None and at.program is not None:
            pmt, pid, codec = at.program
            self._units = TsUnits(TsDemuxer.resume((pmt, pid, Codec(codec)), at.anchor_pos))

    def set_mode(self, keyframes_only: bool, skip_nonref: bool, residuals: bool = True) -> None:
        """Change what is decoded from the next frame on (graceful degradation under load); the
        records say the least complete mode any of their frames had, through their coverage."""
        new = (keyframes_only, skip_nonref, residuals)
        if new == (self.cfg.keyframes_only, self.cfg.skip_nonref, self.cfg.residuals):
            return
        self.cfg = replace(
            self.cfg, keyframes_only=keyframes_only, skip_nonref=skip_nonref, residuals=residuals
        )
        self._records.configure(self.cfg)
        if self._ctx is not None:
            self._ctx.skip_frame = "NONKEY" if keyframes_only else ("NONREF" if skip_nonref else "DEFAULT")
        self._records.residuals.forget()  # no reference across a mode change

    def _open(self, codec: Codec, extradata: bytes | None = None) -> None:
        ctx = av.CodecContext.create(codec.value, "r")
        if extradata:
            ctx.extradata = extradata  # fMP4: avcC/hvcC, so length-prefixed samples decode as they are
        ctx.thread_type = "NONE"
        ctx.thread_count = 1
        if codec is not Codec.HEVC:
            enable_mv_export(ctx)
        if codec is Codec.H264 and self.cfg.qp:
            ctx.options = dict(ctx.options) | {"export_side_data": "venc_params"}
        if self.cfg.keyframes_only:
            ctx.skip_frame = "NONKEY"
        elif self.cfg.skip_nonref:
            ctx.skip_frame = "NONREF"
        if self.cfg.skip_loop_filter:
            ctx.options = dict(ctx.options) | {"skip_loop_filter": "nokey"}
        self._ctx = ctx
        self._records.codec = codec

    # --- input ------------------------------------------------------------------------------

    def feed(
        self, data: bytes, container: Container | None = None, ends_gop: bool = False
    ) -> list[GopFeatures]:
        """Process the next piece of the stream; returns the records completed by it.

        ``ends_gop``: the piece ends where a GOP ends and what follows starts with an IDR frame
        (closed GOPs cut at keyframes; the ingest says so per segment). The decoder is then drained
        and the last record finished now, instead of when the next keyframe comes out of the
        decoder, one piece later; the records are the same either way. The next piece starts
        cold: access units before its first IDR are skipped and counted. H.264 and HEVC in MPEG-TS
        or fMP4 only; ignored for MPEG-4 Part 2 (no IDR) and Annex-B (its parser keeps state).

        Bad input raises a :class:`~streaming.errors.MediaError` and resets the context; the
        extractor then waits for the next keyframe.
        """
        if not data:
            raise CorruptSegmentError("empty payload (0 bytes)")
        try:
            out = self._feed(data, container)
            drainable = self._timestamped and self._records.codec in _IDR_CODECS
            if ends_gop and self._ctx is not None and drainable:
                out += self._drain()
            return out
        except MediaError:
            self._reset()
            raise
        except (av.error.FFmpegError, ValueError, IndexError) as e:
            self._reset()
            raise CorruptSegmentError(f"decode failed: {str(e).splitlines()[0][:160]}") from e

    def _feed(self, data: bytes, container: Container | None) -> list[GopFeatures]:
        if self._units is None:
            self._units = open_units(container or sniff_container(data))
        units = self._units.feed(data)
        if self._units.codec is not None and self._ctx is None:
            self._open(self._units.codec, self._units.extradata)
            self._records.tick = self._units.tick
        if not self._units.timestamped and self._t0 is None:
            self._t0 = 0.0
        deadline = time.monotonic() + self.cfg.decode_budget_s
        out: list[GopFeatures] = []
        for u in units:
            if u.pos is not None and u.pts is not None:
                self._pos_by_pts[u.pts] = u.pos
            self._decode_unit(u, out)
            if time.monotonic() > deadline:
                raise DecodeBudgetExceededError(
                    f"decoding took over the {self.cfg.decode_budget_s:.1f}s budget for one segment"
                )
        return out

    def _drain(self) -> list[GopFeatures]:
        """Decode what the source and the decoder still hold, finish the open record, and leave
        the decoder empty for a piece that starts with an IDR frame."""
        assert self._ctx is not None and self._units is not None
        out: list[GopFeatures] = []
        for u in self._units.flush():
            self._decode_unit(u, out)
        self._decode(None, out)
        self._ctx.flush_buffers()  # out of draining mode: the next packet starts afresh
        if self._records.open is not None:
            out.append(self._records.finish(self._after_last_packet()))
        self._seen_key = False  # nothing to predict from: a next piece without a keyframe is skipped
        self._records.residuals.forget()
        self._drained = True
        return out

    def _after_last_packet(self) -> float | None:
        """Media time just after the last packet fed (where a next GOP would start), or None
        without timestamps (Annex-B)."""
        stamps = [pts for pts, _ in self._records.packets if pts is not None]
        return max(stamps) * self._records.tick + self._records.frame_s if stamps else None

    def _skip(self) -> None:
        self._records.skipped += 1
        self.skipped_total += 1

    def _decode_unit(self, u: AccessUnit, out: list[GopFeatures]) -> None:
        """One access unit: a PES (MPEG-TS, 90 kHz), an fMP4 sample, or a parsed Annex-B packet."""
        if self._ctx is None:
            return
        if u.packet is not None:
            self._decode(u.packet, out)
            return
        codec = self._records.codec
        if self._drained and codec is not None:  # a piece after a drain must open with an IDR
            if not starts_with_idr(u.data, codec):
                self._skip()  # undecodable: FFmpeg would drop it without a word
                return
            self._drained = False
        pkt = padded_packet(u.data)
        pkt.pts, pkt.dts = u.pts, u.dts
        self._decode(pkt, out)

    def flush(self) -> list[GopFeatures]:
        """End of stream: drain the source and decoder, return the last records, forget the context."""
        out: list[GopFeatures] = []
        if self._ctx is not None and self._units is not None:
            try:
                for u in self._units.flush():
                    self._decode_unit(u, out)
                self._decode(None, out)
            except av.error.FFmpegError:
                pass
        if self._records.open is not None:
            out.append(self._records.finish(self._after_last_packet()))
        self._reset()
        return out

    # --- decoding ---------------------------------------------------------------------------

    def _decode(self, pkt: av.Packet | None, out: list[GopFeatures]) -> None:
        assert self._ctx is not None
        if pkt is not None:
            self._records.packets.append((pkt.pts, pkt.size))
        try:
            frames = self._ctx.decode(pkt)
        except av.error.InvalidDataError:
            if self._seen_key:
                raise
            self._skip()  # cold start: references missing until the first keyframe
            return
        for frame in frames:
            self._frame(frame, out)

    def _frame(self, frame: av.VideoFrame, out: list[GopFeatures]) -> None:
        cfg = self.cfg
        rb = self._records
        if frame.width > cfg.max_width or frame.height > cfg.max_height:
            raise OversizedInputError(
                f"frame size {frame.width}x{frame.height} is over the limit {cfg.max_width}x{cfg.max_height}"
            )
        if rb.fps is None:
            rate = self._ctx.framerate if self._ctx is not None else None
            rb.fps = float(rate) if rate and 1 <= rate <= MAX_FPS else cfg.default_fps
        if frame.pts is not None and self._timestamped:
            t = frame.pts * rb.tick
        else:
            t = (self._t0 or 0.0) + self._n / rb.fps
        self._n += 1
        key = bool(frame.key_frame)
        if self._resume is not None:
            self._resumed_frame(frame, t, key)
            return
        if not self._seen_key and not key:
            self._skip()  # cold start: nothing before the first keyframe is trustworthy
            return
        self._seen_key = True
        ch = rb.open
        long_gop = ch is not None and (
            t - ch.start_s >= cfg.step_s - 1e-6 or len(ch.types) >= cfg.max_record_frames
        )
        if not (key or ch is None or long_gop):
            rb.add(frame, t, key)
            return
        if ch is not None:
            out.append(rb.finish(t if self._timestamped else None))
        if key:
            self._gop_index += 1
            self._anchor = self._pos_by_pts.get(frame.pts) if frame.pts is not None else None
            self._pos_by_pts = {p: o for p, o in self._pos_by_pts.items() if p > (frame.pts or 0)}
        idx = 0 if key else (ch.chunk_index + 1 if ch is not None else 0)
        rb.start(frame, t, key, self._gop_index, idx)

    def _resumed_frame(self, frame: av.VideoFrame, t: float, key: bool) -> None:
        """A frame while resuming: before the open record, a reference only; at its start, the
        record opens as the interrupted extractor had it."""
        resume = self._resume
        rb = self._records
        assert resume is not None
        if t < resume.start_s - 1e-6:  # already recorded by the extractor this one replaces
            self._seen_key = self._seen_key or key
            if self._seen_key and rb.residuals.made_for(picture_type(frame)):
                rb.residuals.reference(frame, -(-frame.height // MB), -(-frame.width // MB))
            return
        self._resume = None
        self._seen_key = True
        self._gop_index = resume.gop_index
        self._anchor = resume.anchor_pos
        rb.packets = rb.split_packets(t)[1]
        rb.skipped = resume.skipped
        rb.open = None
        rb.start(frame, t, key, self._gop_index, resume.chunk_index)


__all__ = ["ExtractConfig", "GopFeatures", "Resume", "StreamExtractor", "accumulate_motion"]
