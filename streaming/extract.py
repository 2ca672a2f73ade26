"""Incremental compressed-domain feature extraction, per stream: segments in, GOP features out.

One :class:`StreamExtractor` per stream keeps the demuxer and the decoder between segments, so a GOP
that spans two segments, or a segment cut at any byte, gives the same features as the whole stream
at once (the decoder sees the same elementary stream either way). Per GOP, and per ``step_s`` inside
longer GOPs, it yields a :class:`GopFeatures` record:

* the first frame (the I-frame at a GOP start) as a small RGB thumbnail, the only colour conversion;
* motion vectors on the 16x16 macroblock grid for each frame, list0 (past references) and list1
  (future references, B-frames) kept apart, in pixels (``src - dst``: where the block came from);
* residual maps: |luma - motion-compensated prediction| averaged per macroblock. FFmpeg exports no
  codec residuals, so the prediction is rebuilt from the list0 vectors applied to the reference (at
  1/``residual_scale`` resolution). With ``residual_frames="all"`` (the default) every frame is
  compared with the frame displayed before it (list1-only blocks predicted with zero motion).
  ``"IP"`` makes residuals for I- and P-frames only, each P-frame against the previous I/P frame
  (the frame its list0 vectors point into, as in CoViAR); B-frames keep their vectors and get a
  zero map, and their luma is never read, which brings the extraction to the decoder's own speed
  on B-frame streams (a frame that comes out of the reorder buffer has left the CPU's caches). But
  flashes are then sampled at the P-frame rate (~7 Hz at 25 fps with 3 B-frames): a student
  trained so scored a 5 Hz flash like the slow strobes it must ignore, so the shipped student
  uses "all". Either way it approximates the codec's residual, cheaply and monotone in
  prediction error;
* frame types in display order, packet sizes in decode order (bits per frame).

HEVC has no motion-vector export in FFmpeg: its features carry I-frames and frame statistics only,
with coverage ``no_motion_vectors``. MPEG-4 Part 2 works like H.264. Containers, each incremental
at any byte split: MPEG-TS (own demuxer), fragmented MP4 (own demuxer; the init segment first) and
Annex-B elementary streams (FFmpeg's parser).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import av
import cv2
import numpy as np

from schemas.events import CoverageMode
from schemas.segment import Codec, Container
from streaming.errors import (
    CorruptSegmentError,
    DecodeBudgetExceededError,
    MediaError,
    OversizedInputError,
    UnsupportedCodecError,
)
from streaming.fmp4 import Fmp4Demuxer
from streaming.kernels import mv_field_into, residual_into, subsample_into
from streaming.media import (
    enable_mv_export,
    frame_qp,
    luma,
    motion_vector_records,
    mv_table,
    padded_packet,
    picture_type,
    starts_with_idr,
)
from streaming.tsdemux import TsDemuxer

MB = 16
_IDR_CODECS = (Codec.H264, Codec.HEVC)  # codecs with IDR pictures: where ``ends_gop`` can hold
_RANK = {
    CoverageMode.FULL: 0, CoverageMode.NO_RESIDUALS: 1, CoverageMode.REFERENCE_FRAMES: 2,
    CoverageMode.IFRAME_ONLY: 3, CoverageMode.NO_MOTION_VECTORS: 4,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExtractConfig:
    thumb_size: tuple[int, int] = (160, 90)
    step_s: float = 2.0  # longest span of one record inside a long GOP
    residual_scale: int = 16  # residuals from luma at 1/16 resolution: one sample per macroblock
    # "all": every frame against the one displayed before it; "IP": I/P frames only, each against
    # the previous I/P (cheaper on B-frame streams, but samples flashes at the P-frame rate)
    residual_frames: str = "all"
    residuals: bool = True
    keyframes_only: bool = False  # decoder skips every non-key frame (cheapest, no motion)
    skip_nonref: bool = False  # decoder skips non-reference frames (B-frames)
    skip_loop_filter: bool = False
    max_width: int = 3840
    max_height: int = 2160
    decode_budget_s: float = 10.0
    keyframe_width: int = 0  # >0: keep each record's first frame as RGB at most this wide (cascade)
    # per-frame QP from the decoder's venc_params side data (H.264 only). Off by default: the export
    # costs ~5% of decoding (FFmpeg fills a block table per frame) and the student does without it
    qp: bool = False
    keep_raw_mvs: bool = False  # keep FFmpeg's raw vectors per frame (debugging, cross-checks)
    default_fps: float = 25.0

    def __post_init__(self) -> None:
        if self.residual_scale not in (1, 2, 4, 8, 16):
            raise ValueError("residual_scale must divide the 16-pixel macroblock (1, 2, 4, 8 or 16)")
        if self.residual_frames not in ("IP", "all"):
            raise ValueError('residual_frames must be "IP" or "all"')


@dataclass(frozen=True, slots=True)
class GopFeatures:
    stream_id: str
    gop_index: int
    chunk_index: int  # 0 at a GOP start; >0 for later steps of a long GOP
    start_s: float
    end_s: float
    frame_types: str  # display order, e.g. "IBBPBBP…"
    thumbnail: np.ndarray  # (th, tw, 3) uint8 RGB of the first frame
    mv: np.ndarray  # (T, 2, 2, Hm, Wm) float16: frame, list0/list1, dx/dy, macroblock grid
    residual: np.ndarray  # (T, Hm, Wm) float16, mean |error| in luma levels (0..255); 0 where not made
    packet_bytes: np.ndarray  # (P,) int32: the record's frames' packets in decode order (by timestamp)
    qp: np.ndarray  # (T,) float32 frame QP where the decoder exports it (H.264), else NaN
    codec: Codec
    width: int
    height: int
    coverage: CoverageMode = CoverageMode.FULL
    skipped_frames: int = 0
    raw_mvs: tuple[np.ndarray, ...] | None = None
    keyframe: np.ndarray | None = None  # (H, W, 3) RGB of the first frame, when configured

    @property
    def n_frames(self) -> int:
        return len(self.frame_types)

    def accumulated_mv(self) -> np.ndarray:
        """list0 motion accumulated back to the record's first frame, as in CoViAR: (T, 2, hm, wm)."""
        return accumulate_motion(self.mv[:, 0].astype(np.float32))


def accumulate_motion(list0: np.ndarray) -> np.ndarray:
    """Trace each macroblock's past-reference chain back to frame 0 (CoViAR's accumulated motion).

    ``list0`` is (T, 2, hm, wm) in pixels (``src - dst``). acc[t] at a block = its own vector plus
    acc[t-1] at the macroblock its vector points to (nearest macroblock, clamped): the displacement
    from frame 0 to frame t. On the macroblock grid and through the previous displayed frame, so an
    approximation for B-frames whose list0 reference lies further back.
    """
    t, _, hm, wm = list0.shape
    acc = np.zeros_like(list0)
    if t == 0:
        return acc
    gy, gx = np.mgrid[0:hm, 0:wm]
    acc[0] = list0[0]
    for k in range(1, t):
        dx, dy = list0[k, 0], list0[k, 1]
        sy = np.clip(np.rint(gy + dy / MB), 0, hm - 1).astype(np.intp)
        sx = np.clip(np.rint(gx + dx / MB), 0, wm - 1).astype(np.intp)
        acc[k] = list0[k] + acc[k - 1][:, sy, sx]
    return acc


@dataclass(frozen=True, slots=True)
class Resume:
    """Where an interrupted extractor's open record starts (see :meth:`StreamExtractor.resume`)."""

    start_s: float
    gop_index: int
    chunk_index: int
    skipped: int = 0
    anchor_pos: int | None = None  # MPEG-TS: stream offset of the GOP's keyframe PES
    program: tuple[int, int, str] | None = None  # MPEG-TS: PMT pid, video pid, codec


@dataclass
class _Chunk:
    """What one record collects, frame by frame."""

    gop_index: int
    chunk_index: int
    start_s: float
    thumb: np.ndarray
    grid: tuple[int, int]  # macroblock rows, columns
    keyframe: np.ndarray | None
    types: list[str] = field(default_factory=list)
    qps: list[float] = field(default_factory=list)
    raw: list[np.ndarray] = field(default_factory=list)
    end_s: float = 0.0
    coverage: CoverageMode = CoverageMode.FULL  # the least complete mode any of its frames had


def to_float16(a: np.ndarray) -> np.ndarray:
    """float32 -> float16, bit-identical to ``astype`` but ~10x faster (OpenCV's SIMD conversion)."""
    flat = np.ascontiguousarray(a, np.float32).reshape(-1, a.shape[-1])
    return np.asarray(cv2.convertFp16(flat)).view(np.float16).reshape(a.shape)


class _Buffers:
    """Per-stream float32 buffers of the open record, one slot per frame, reused record after record.

    The kernels write each frame's vector field and residual map straight into its slot, and the
    record is converted to float16 once, when it closes: no allocation or conversion call per
    frame (at 720p25 the buffers hold ~3.7 MB per stream).
    """

    __slots__ = ("acc", "grid", "mv", "res")

    def __init__(self, hm: int, wm: int, frames: int) -> None:
        self.grid = (hm, wm)
        self.mv = np.zeros((frames, 2, 2, hm, wm), np.float32)
        self.res = np.zeros((frames, hm, wm), np.float32)
        self.acc = np.empty((2, hm, wm), np.float32)  # mv_field_into scratch (areas)

    def ensure(self, frames: int) -> None:
        if frames > len(self.mv):  # a record longer than planned (frame rate higher than declared)
            n = max(frames, 2 * len(self.mv))
            self.mv = np.concatenate([self.mv, np.zeros((n - len(self.mv), *self.mv.shape[1:]), np.float32)])
            self.res = np.concatenate(
                [self.res, np.zeros((n - len(self.res), *self.res.shape[1:]), np.float32)]
            )


class StreamExtractor:
    """Feed one stream's segments in order with :meth:`feed`; call :meth:`flush` at its end."""

    def __init__(self, stream_id: str, config: ExtractConfig | None = None) -> None:
        self.stream_id = stream_id
        self.cfg = config or ExtractConfig()
        self.skipped_total = 0
        self._gop_index = -1
        self._resume: Resume | None = None
        self._reset()

    # --- state ------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._demux: TsDemuxer | None = None
        self._fmp4: Fmp4Demuxer | None = None
        self._tick = 1 / 90000  # seconds per timestamp unit (TS: 90 kHz; fMP4: the track's timescale)
        self._container: Container | None = None
        self._ctx: av.codec.context.CodecContext | None = None
        self._codec: Codec | None = None
        self._t0: float | None = None
        self._n = 0  # frames out of the decoder (display order), including skipped ones
        self._seen_key = False
        self._drained = False
        self._chunk: _Chunk | None = None
        self._prev_y: np.ndarray | None = None  # the last reference frame's small luma
        self._spare_y: np.ndarray | None = None  # the one before it: the next small luma's buffer
        self._buf: _Buffers | None = None
        self._packets: list[tuple[int | None, int]] = []  # (pts, bytes) in decode order
        self._skipped = 0
        self._fps: float | None = None
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
        return self._container

    @property
    def gop_index(self) -> int:
        """Index of the GOP being collected (-1 before the first keyframe)."""
        return self._gop_index

    @property
    def frames_out(self) -> int:
        """Frames out of the decoder so far (display order): the clock of timestamp-less Annex-B."""
        return self._n

    def pending(self) -> Resume | None:
        """Where the record being collected starts, or None: what a snapshot needs to resume."""
        ch = self._chunk
        if ch is None:
            return None
        prog = self._demux.program() if self._demux is not None else None
        return Resume(
            ch.start_s, ch.gop_index, ch.chunk_index, self._skipped, self._anchor,
            (prog[0], prog[1], prog[2].value) if prog and self._anchor is not None else None,
        )  # fmt: skip

    @property
    def bytes_fed(self) -> int:
        """MPEG-TS: bytes of the stream fed since the context began (offsets in :class:`Resume`)."""
        return self._demux.fed if self._demux is not None else 0

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
            self._container = Container.MPEGTS
            self._demux = TsDemuxer.resume((pmt, pid, Codec(codec)), at.anchor_pos)

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
            ctx.options = dict(ctx.options) | {"skip_loop_filter": "all"}
        self._ctx, self._codec = ctx, codec

    def set_mode(self, keyframes_only: bool, skip_nonref: bool, residuals: bool = True) -> None:
        """Change what is decoded from the next frame on (graceful degradation under load); the
        records say the least complete mode any of their frames had, through their coverage."""
        new = (keyframes_only, skip_nonref, residuals)
        if new == (self.cfg.keyframes_only, self.cfg.skip_nonref, self.cfg.residuals):
            return
        self.cfg = replace(
            self.cfg, keyframes_only=keyframes_only, skip_nonref=skip_nonref, residuals=residuals
        )
        if self._ctx is not None:
            self._ctx.skip_frame = "NONKEY" if keyframes_only else ("NONREF" if skip_nonref else "DEFAULT")
        self._prev_y = None  # no reference across a mode change

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
            timestamped = self._demux is not None or self._fmp4 is not None  # not Annex-B
            if ends_gop and self._ctx is not None and self._codec in _IDR_CODECS and timestamped:
                out += self._drain()
            return out
        except MediaError:
            self._reset()
            raise
        except (av.error.FFmpegError, ValueError, IndexError) as e:
            self._reset()
            raise CorruptSegmentError(f"decode failed: {str(e).splitlines()[0][:160]}") from e

    def _feed(self, data: bytes, container: Container | None) -> list[GopFeatures]:
        if self._container is None:
            self._container = container or _sniff(data)
            if self._container is Container.FMP4:
                self._fmp4 = Fmp4Demuxer()
            if self._container is Container.MPEGTS:
                self._demux = TsDemuxer()
        deadline = time.monotonic() + self.cfg.decode_budget_s
        out: list[GopFeatures] = []
        if self._demux is not None:
            pes = self._demux.feed(data)
            if self._demux.codec is not None and self._ctx is None:
                self._open(self._demux.codec)
            for p in pes:
                if p.pts is not None:
                    self._pos_by_pts[p.pts] = p.pos
                self._decode_unit(p.data, p.pts, p.dts, out)
                self._check(deadline)
        elif self._fmp4 is not None:
            samples = self._fmp4.feed(data)
            if self._fmp4.codec is not None and self._ctx is None:
                self._open(self._fmp4.codec, self._fmp4.extradata)
                self._tick = 1 / self._fmp4.timescale
            for sm in samples:
                self._decode_unit(sm.data, sm.pts, sm.dts, out)
                self._check(deadline)
        else:
            if self._ctx is None:
                self._open(_sniff_annexb_codec(data))
            if self._t0 is None:
                self._t0 = 0.0
            self._parse(data, out, deadline)
        return out

    def _drain(self) -> list[GopFeatures]:
        """Decode what the demuxer and the decoder still hold, finish the open record, and leave
        the decoder empty for a piece that starts with an IDR frame."""
        assert self._ctx is not None
        out: list[GopFeatures] = []
        if self._demux is not None:
            for p in self._demux.flush():
                self._decode_unit(p.data, p.pts, p.dts, out)
        self._decode(None, out)
        self._ctx.flush_buffers()  # out of draining mode: the next packet starts afresh
        if self._chunk is not None:
            out.append(self._finish(self._chunk, self._after_last_packet()))
            self._chunk = None
        self._seen_key = False  # nothing to predict from: a next piece without a keyframe is skipped
        self._prev_y = None
        self._drained = True
        return out

    def _after_last_packet(self) -> float | None:
        """Media time just after the last packet fed (where a next GOP would start), or None
        without timestamps (Annex-B)."""
        stamps = [pts for pts, _ in self._packets if pts is not None]
        return max(stamps) * self._tick + 1.0 / (self._fps or self.cfg.default_fps) if stamps else None

    @property
    def drained(self) -> bool:
        """Whether the last piece ended a GOP and nothing carries over to the next (no decoder
        state, no open record): a hand-over then needs no earlier segment. Until an IDR access
        unit arrives, what comes is skipped and counted."""
        return self._drained

    def _check(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise DecodeBudgetExceededError(
                f"decoding took over the {self.cfg.decode_budget_s:.1f}s budget for one segment"
            )

    def _parse(self, es: bytes, out: list[GopFeatures], deadline: float) -> None:
        """Annex-B: FFmpeg's parser splits the byte stream into access units (no timestamps)."""
        assert self._ctx is not None
        for pkt in self._ctx.parse(es):
            self._decode(pkt, out)
            self._check(deadline)

    def _decode_unit(self, data: bytes, pts: int | None, dts: int | None, out: list[GopFeatures]) -> None:
        """One access unit with its timestamps: a PES (MPEG-TS, 90 kHz) or an fMP4 sample."""
        if self._ctx is None:
            return
        if self._drained and self._codec is not None:  # a piece after a drain must open with an IDR
            if not starts_with_idr(data, self._codec):
                self._skipped += 1  # undecodable: FFmpeg would drop it without a word
                self.skipped_total += 1
                return
            self._drained = False
        pkt = padded_packet(data)
        pkt.pts, pkt.dts = pts, dts
        self._decode(pkt, out)

    def flush(self) -> list[GopFeatures]:
        """End of stream: drain the parser and decoder, return the last records, forget the context."""
        out: list[GopFeatures] = []
        if self._ctx is not None:
            try:
                if self._demux is not None:
                    for p in self._demux.flush():
                        self._decode_unit(p.data, p.pts, p.dts, out)
                elif self._fmp4 is None:
                    for pkt in self._ctx.parse(None):
                        self._decode(pkt, out)
                self._decode(None, out)
            except av.error.FFmpegError:
                pass
        if self._chunk is not None:
            out.append(self._finish(self._chunk, self._after_last_packet()))
        self._reset()
        return out

    # --- decoding ---------------------------------------------------------------------------

    def _decode(self, pkt: av.Packet | None, out: list[GopFeatures]) -> None:
        assert self._ctx is not None
        if pkt is not None:
            self._packets.append((pkt.pts, pkt.size))
        try:
            frames = self._ctx.decode(pkt)
        except av.error.InvalidDataError:
            if self._seen_key:
                raise
            self._skipped += 1  # cold start: references missing until the first keyframe
            self.skipped_total += 1
            return
        for frame in frames:
            self._frame(frame, out)

    def _frame(self, frame: av.VideoFrame, out: list[GopFeatures]) -> None:
        cfg = self.cfg
        if frame.width > cfg.max_width or frame.height > cfg.max_height:
            raise OversizedInputError(
                f"frame size {frame.width}x{frame.height} is over the limit {cfg.max_width}x{cfg.max_height}"
            )
        if self._fps is None:
            rate = self._ctx.framerate if self._ctx is not None else None
            self._fps = float(rate) if rate else cfg.default_fps
        if frame.pts is not None and (self._demux is not None or self._fmp4 is not None):
            t = frame.pts * self._tick
        else:
            t = (self._t0 or 0.0) + self._n / self._fps
        self._n += 1
        key = bool(frame.key_frame)
        resume = self._resume
        if resume is not None:
            if t < resume.start_s - 1e-6:  # already recorded by the extractor this one replaces
                self._seen_key = self._seen_key or key
                if self._seen_key and self._has_residual(picture_type(frame)):
                    hm, wm = -(-frame.height // MB), -(-frame.width // MB)
                    self._prev_y = self._small_luma(frame, hm, wm)  # the next frame's reference
                return
            self._resume = None
            self._seen_key = True
            self._gop_index = resume.gop_index
            self._anchor = resume.anchor_pos
            self._packets = self._packets_from(t)[1]
            self._skipped = resume.skipped
            self._chunk = None
            self._start(frame, t, key, resume.chunk_index)
            return
        if not self._seen_key and not key:
            self._skipped += 1  # cold start: nothing before the first keyframe is trustworthy
            self.skipped_total += 1
            return
        self._seen_key = True
        ch = self._chunk
        long_gop = ch is not None and t - ch.start_s >= cfg.step_s - 1e-6
        if key or ch is None or long_gop:
            if ch is not None:
                out.append(self._finish(ch, t if self._demux is not None or self._fmp4 is not None else None))
            if key:
                self._gop_index += 1
                self._anchor = self._pos_by_pts.get(frame.pts) if frame.pts is not None else None
                self._pos_by_pts = {p: o for p, o in self._pos_by_pts.items() if p > (frame.pts or 0)}
            idx = 0 if key else (ch.chunk_index + 1 if ch is not None else 0)
            self._start(frame, t, key, idx)
        else:
            self._record(frame, t, key, ch)

    def _start(self, frame: av.VideoFrame, t: float, key: bool, idx: int) -> None:
        """Open a new record at ``frame`` and record the frame into it."""
        cfg = self.cfg
        tw, th = cfg.thumb_size
        thumb = frame.to_ndarray(format="rgb24", width=tw, height=th)
        grid = (-(-frame.height // MB), -(-frame.width // MB))
        kf = None
        if cfg.keyframe_width:
            kw = min(cfg.keyframe_width, frame.width) // 2 * 2
            kf = frame.to_ndarray(
                format="rgb24", width=kw, height=round(frame.height * kw / frame.width) // 2 * 2
            )
        ch = self._chunk = _Chunk(max(self._gop_index, 0), idx, t, thumb, grid, kf)
        self._record(frame, t, key, ch)

    def _record(self, frame: av.VideoFrame, t: float, key: bool, ch: _Chunk) -> None:
        cfg = self.cfg
        hm, wm = ch.grid
        i = len(ch.types)
        buf = self._buf
        if buf is None or buf.grid != ch.grid:
            buf = self._buf = _Buffers(hm, wm, int(cfg.step_s * (self._fps or cfg.default_fps)) + 2)
        buf.ensure(i + 1)
        rec = motion_vector_records(frame) if self._codec is not Codec.HEVC else None
        if rec is None:
            buf.mv[i].fill(0.0)
        else:
            mv_field_into(rec, buf.mv[i], buf.acc)
        ptype = picture_type(frame)
        ch.types.append(ptype)
        ch.qps.append(frame_qp(frame) if cfg.qp else math.nan)
        if cfg.keep_raw_mvs:
            ch.raw.append(mv_table(rec))
        self._residual(frame, buf.mv[i, 0], buf.res[i], key, ptype)
        ch.end_s = t + 1.0 / (self._fps or cfg.default_fps)
        mode = self._mode()
        if _RANK[mode] > _RANK[ch.coverage]:
            ch.coverage = mode

    def _mode(self) -> CoverageMode:
        if self._codec is Codec.HEVC:
            return CoverageMode.NO_MOTION_VECTORS
        if self.cfg.keyframes_only:
            return CoverageMode.IFRAME_ONLY
        if self.cfg.skip_nonref:
            return CoverageMode.REFERENCE_FRAMES
        return CoverageMode.FULL if self.cfg.residuals else CoverageMode.NO_RESIDUALS

    def _has_residual(self, ptype: str) -> bool:
        """Whether a frame of this type gets a residual map, and so is the next one's reference."""
        cfg = self.cfg
        return cfg.residuals and not cfg.keyframes_only and (cfg.residual_frames == "all" or ptype != "B")

    def _residual(
        self, frame: av.VideoFrame, flow: np.ndarray, out: np.ndarray, key: bool, ptype: str
    ) -> None:
        """The frame's residual map into ``out`` (zeros on key frames, without a reference and on
        B-frames under ``residual_frames="IP"``); ``flow`` is its list0 vector field."""
        if not self._has_residual(ptype):
            out.fill(0.0)
            return
        hm, wm = out.shape
        small = self._small_luma(frame, hm, wm, into=self._spare_y)
        prev, self._prev_y = self._prev_y, small
        self._spare_y = prev
        if not key and prev is not None and prev.shape == small.shape:
            residual_into(small, prev, flow, self.cfg.residual_scale, out)  # writes every cell
        else:
            out.fill(0.0)

    def _small_luma(
        self, frame: av.VideoFrame, hm: int, wm: int, into: np.ndarray | None = None
    ) -> np.ndarray:
        """Luma at 1/residual_scale of the macroblock-aligned size, point-sampled (the cheapest
        resize; the residual is an error measure, not a picture), into ``into`` when it fits. The
        padded plane is resized when its line size allows, to spare OpenCV a copy of the frame."""
        s = self.cfg.residual_scale
        px = MB // s
        y = luma(frame, padded=True)
        line = y.shape[1]
        if y.shape[0] == hm * MB and wm * MB <= line:  # exact fit: sample the plane in place
            if into is None or into.shape != (hm * px, wm * px):
                into = np.empty((hm * px, wm * px), np.uint8)
            subsample_into(y, s, into)
            return into
        if line % s == 0 and line // s >= wm * px:
            small = cv2.resize(y, (line // s, hm * px), interpolation=cv2.INTER_NEAREST)
            return np.ascontiguousarray(small[:, : wm * px])
        return cv2.resize(y[:, : frame.width], (wm * px, hm * px), interpolation=cv2.INTER_NEAREST)

    def _packets_from(self, t: float | None) -> tuple[list[int], list[tuple[int | None, int]]]:
        """Split the pending packets at media time ``t``: the sizes of those before it (the record
        being finished) and the rest (frames of the next record, fed ahead of their output).
        Packets without a timestamp (Annex-B) go with the record being finished."""
        if t is None:
            return [n for _, n in self._packets], []
        done: list[int] = []
        rest: list[tuple[int | None, int]] = []
        for pts, n in self._packets:
            if pts is not None and pts * self._tick >= t - 1e-6:
                rest.append((pts, n))
            else:
                done.append(n)
        return done, rest

    def _finish(self, ch: _Chunk, until_s: float | None = None) -> GopFeatures:
        assert self._codec is not None
        coverage = ch.coverage
        if coverage is CoverageMode.IFRAME_ONLY and until_s is not None:
            ch.end_s = max(ch.end_s, until_s)  # an I-frame-only record stands for its whole GOP
        packets, self._packets = self._packets_from(until_s)
        skipped, self._skipped = self._skipped, 0
        assert self._buf is not None
        n = len(ch.types)
        mv = to_float16(self._buf.mv[:n])
        return GopFeatures(
            stream_id=self.stream_id,
            gop_index=ch.gop_index,
            chunk_index=ch.chunk_index,
            start_s=round(ch.start_s, 6),
            end_s=round(ch.end_s, 6),
            frame_types="".join(ch.types),
            thumbnail=ch.thumb,
            mv=mv,
            residual=to_float16(self._buf.res[:n]),
            packet_bytes=np.asarray(packets, np.int32),
            qp=np.asarray(ch.qps, np.float32),
            codec=self._codec,
            width=int(mv.shape[-1] * MB),
            height=int(mv.shape[-2] * MB),
            coverage=coverage,
            skipped_frames=skipped,
            raw_mvs=tuple(ch.raw) if self.cfg.keep_raw_mvs else None,
            keyframe=ch.keyframe,
        )


def _sniff(data: bytes) -> Container:
    for i in range(min(188, len(data))):  # a stream cut at any byte: look for two syncs 188 apart
        if data[i] == 0x47 and ((len(data) > i + 188 and data[i + 188] == 0x47) or i == 0):
            return Container.MPEGTS
    if data[:4] == b"\x00\x00\x00\x01" or data[:3] == b"\x00\x00\x01":
        return Container.ANNEXB
    if data[4:8] in (b"ftyp", b"moof", b"styp", b"sidx"):
        return Container.FMP4
    raise CorruptSegmentError("unrecognised payload: not MPEG-TS, Annex-B or fragmented MP4")


def _sniff_annexb_codec(data: bytes) -> Codec:
    i = data.find(b"\x00\x00\x01")
    if i < 0 or i + 3 >= len(data):
        raise CorruptSegmentError("Annex-B stream without a start code")
    b = data[i + 3]
    if b == 0xB0 or b == 0xB6 or (b <= 0x2F and data[i + 3 : i + 4] in (b"\x00", b"\x20")):
        return Codec.MPEG4
    if (b >> 1) & 0x3F in (32, 33, 34, 19, 20, 35):  # HEVC VPS/SPS/PPS/IDR/AUD
        return Codec.HEVC
    if b & 0x1F in (1, 5, 6, 7, 8, 9):
        return Codec.H264
    raise UnsupportedCodecError("Annex-B stream of an unsupported codec")
