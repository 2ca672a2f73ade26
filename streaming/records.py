"""The record builder: decoded frames in, :class:`~streaming.gop.GopFeatures` records out.

The extractor decides where a record starts and ends (keyframes, ``step_s`` steps); the builder
collects each frame's vector field, residual map, type and QP into per-stream buffers reused record
after record, and converts the record to float16 once, when it closes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import av
import cv2
import numpy as np

from schemas.events import CoverageMode
from schemas.segment import Codec
from streaming.gop import MB, ExtractConfig, GopFeatures
from streaming.kernels import block_luma_into, mv_field_into
from streaming.media import frame_qp, luma, motion_vector_records, mv_table, picture_type
from streaming.residuals import ResidualMaps

# how complete a mode is, least complete last: a record carries the least complete of its frames'
_RANK = {
    CoverageMode.FULL: 0, CoverageMode.NO_RESIDUALS: 1, CoverageMode.REFERENCE_FRAMES: 2,
    CoverageMode.IFRAME_ONLY: 3, CoverageMode.NO_MOTION_VECTORS: 4,
}  # fmt: skip


@dataclass
class OpenRecord:
    """The record being collected, frame by frame."""

    gop_index: int
    chunk_index: int
    start_s: float
    thumb: np.ndarray
    grid: tuple[int, int]  # macroblock rows, columns
    keyframe: np.ndarray | None
    types: list[str] = field(default_factory=list)
    qps: list[float] = field(default_factory=list)
    raw: list[np.ndarray] = field(default_factory=list)
    lumas: list[np.ndarray] = field(default_factory=list)  # per frame: mean luma per macroblock
    end_s: float = 0.0
    coverage: CoverageMode = CoverageMode.FULL
    damaged: int = 0


def block_luma(frame: av.VideoFrame, hm: int, wm: int) -> np.ndarray:
    """Each macroblock's mean luma, estimated from every 4th pixel of every 4th row (16 of its
    256): what a flash check needs (areas, not pixels: a single sample per block aliases on
    moving texture), at a small cost per frame."""
    if frame.height == hm * MB and frame.width == wm * MB:  # whole macroblocks: one compiled pass
        out = np.empty((hm, wm), np.uint8)
        block_luma_into(luma(frame, padded=True), out)
        return out
    sub = np.ascontiguousarray(luma(frame)[::4, ::4])
    return cv2.resize(sub, (wm, hm), interpolation=cv2.INTER_AREA)


def to_float16(a: np.ndarray) -> np.ndarray:
    """float32 -> float16, bit-identical to ``astype`` but faster (OpenCV's SIMD conversion)."""
    if a.ndim == 0 or a.size == 0:
        return a.astype(np.float16)
    flat = np.ascontiguousarray(a, np.float32).reshape(-1, a.shape[-1])
    return np.asarray(cv2.convertFp16(flat)).view(np.float16).reshape(a.shape)


def to_float32(a: np.ndarray) -> np.ndarray:
    """float16 -> float32, bit-identical to ``astype`` (NaN and infinities included) but faster."""
    if a.dtype != np.float16 or a.ndim == 0 or a.size == 0:
        return a.astype(np.float32)
    flat = np.ascontiguousarray(a).view(np.int16).reshape(-1, a.shape[-1])
    return np.asarray(cv2.convertFp16(flat)).reshape(a.shape)


class RecordBuffers:
    """Per-stream float32 buffers of the open record, one slot per frame: the kernels write each
    frame's vector field and residual map straight into its slot, with no allocation per frame."""

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


class RecordBuilder:
    def __init__(self, stream_id: str, cfg: ExtractConfig) -> None:
        self.stream_id = stream_id
        self.cfg = cfg
        self.residuals = ResidualMaps(cfg)
        self.reset()

    def reset(self) -> None:
        """A new decoder context: nothing open, nothing pending."""
        self.open: OpenRecord | None = None
        self.buf: RecordBuffers | None = None
        self.packets: list[tuple[int | None, int]] = []  # (pts, bytes) in decode order
        self.skipped = 0  # frames skipped since the last record
        self.codec: Codec | None = None
        self.fps: float | None = None
        self.tick = 1 / 90000  # seconds per timestamp unit of the packets
        self.residuals.forget()

    def configure(self, cfg: ExtractConfig) -> None:
        """New settings (a mode change under load) from the next frame on."""
        self.cfg = self.residuals.cfg = cfg

    @property
    def frame_s(self) -> float:
        return 1.0 / (self.fps or self.cfg.default_fps)

    def start(self, frame: av.VideoFrame, t: float, key: bool, gop_index: int, chunk_index: int) -> None:
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
        self.open = OpenRecord(max(gop_index, 0), chunk_index, t, thumb, grid, kf)
        self.add(frame, t, key)

    def add(self, frame: av.VideoFrame, t: float, key: bool) -> None:
        """Record ``frame`` into the open record."""
        ch = self.open
        assert ch is not None
        cfg = self.cfg
        hm, wm = ch.grid
        i = len(ch.types)
        buf = self.buf
        if buf is None or buf.grid != ch.grid:
            buf = self.buf = RecordBuffers(hm, wm, int(cfg.step_s * (self.fps or cfg.default_fps)) + 2)
        buf.ensure(i + 1)
        rec = motion_vector_records(frame) if self.codec is not Codec.HEVC else None
        if rec is None:
            buf.mv[i].fill(0.0)
        else:
            mv_field_into(rec, buf.mv[i], buf.acc)
        ptype = picture_type(frame)
        ch.types.append(ptype)
        ch.qps.append(frame_qp(frame) if cfg.qp else math.nan)
        if cfg.keep_raw_mvs:
            ch.raw.append(mv_table(rec))
        self.residuals.into(frame, buf.mv[i, 0], buf.res[i], key, ptype)
        if cfg.block_luma:
            ch.lumas.append(block_luma(frame, hm, wm))
        ch.end_s = t + self.frame_s
        ch.damaged += bool(frame.is_corrupt)
        mode = self.mode()
        if _RANK[mode] > _RANK[ch.coverage]:
            ch.coverage = mode

    def mode(self) -> CoverageMode:
        if self.codec is Codec.HEVC:
            return CoverageMode.NO_MOTION_VECTORS
        if self.cfg.keyframes_only:
            return CoverageMode.IFRAME_ONLY
        if self.cfg.skip_nonref:
            return CoverageMode.REFERENCE_FRAMES
        return CoverageMode.FULL if self.cfg.residuals else CoverageMode.NO_RESIDUALS

    def split_packets(self, t: float | None) -> tuple[list[int], list[tuple[int | None, int]]]:
        """Split the pending packets at media time ``t``: the sizes of those before it (the record
        being finished) and the rest (frames of the next record, fed ahead of their output).
        Packets without a timestamp (Annex-B) go with the record being finished."""
        if t is None:
            return [n for _, n in self.packets], []
        done: list[int] = []
        rest: list[tuple[int | None, int]] = []
        for pts, n in self.packets:
            if pts is not None and pts * self.tick >= t - 1e-6:
                rest.append((pts, n))
            else:
                done.append(n)
        return done, rest

    def finish(self, until_s: float | None = None) -> GopFeatures:
        """Close the open record; ``until_s``: where the next record starts (None: unknown)."""
        ch = self.open
        assert ch is not None and self.codec is not None and self.buf is not None
        self.open = None
        coverage = ch.coverage
        if coverage is CoverageMode.IFRAME_ONLY and until_s is not None:
            ch.end_s = max(ch.end_s, until_s)  # an I-frame-only record stands for its whole GOP
        packets, self.packets = self.split_packets(until_s)
        skipped, self.skipped = self.skipped, 0
        n = len(ch.types)
        mv = to_float16(self.buf.mv[:n])
        return GopFeatures(
            stream_id=self.stream_id,
            gop_index=ch.gop_index,
            chunk_index=ch.chunk_index,
            start_s=round(ch.start_s, 6),
            end_s=round(ch.end_s, 6),
            frame_types="".join(ch.types),
            thumbnail=ch.thumb,
            mv=mv,
            residual=to_float16(self.buf.res[:n]),
            packet_bytes=np.asarray(packets, np.int32),
            qp=np.asarray(ch.qps, np.float32),
            codec=self.codec,
            width=int(mv.shape[-1] * MB),
            height=int(mv.shape[-2] * MB),
            coverage=coverage,
            skipped_frames=skipped,
            damaged_frames=ch.damaged,
            raw_mvs=tuple(ch.raw) if self.cfg.keep_raw_mvs else None,
            keyframe=ch.keyframe,
            luma=np.stack(ch.lumas) if ch.lumas else None,
        )
