"""The extractor's record types: its settings, the GOP feature record, and a resume point.

A :class:`GopFeatures` record covers one GOP, or one ``step_s`` piece of a longer GOP: the I-frame
as a thumbnail, motion vectors and residual maps per frame on the macroblock grid, frame types and
packet sizes (see :mod:`streaming.extract` for how each is made).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.events import CoverageMode
from schemas.segment import Codec

MB = 16  # macroblock size in pixels
MAX_FPS = 300.0  # a declared frame rate past this (or under 1) is damage: the default is used


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
    # the decoder skips H.264's deblocking filter on non-key frames: a fifth less decoding; key
    # frames, which the cascade and the evidence stills read, stay filtered
    skip_loop_filter: bool = False
    max_width: int = 3840
    max_height: int = 2160
    decode_budget_s: float = 10.0
    keyframe_width: int = 0  # >0: keep each record's first frame as RGB at most this wide (cascade)
    block_luma: bool = False  # keep each frame's mean luma per macroblock (the cascade's flash count)
    # per-frame QP from the decoder's venc_params side data (H.264 only); off by default: the
    # export has a cost (FFmpeg fills a block table per frame) and the student does without it
    qp: bool = False
    keep_raw_mvs: bool = False  # keep FFmpeg's raw vectors per frame (debugging, cross-checks)
    default_fps: float = 25.0

    @property
    def max_record_frames(self) -> int:
        """Most frames one record holds: ``step_s`` at the highest frame rate taken. A stream whose
        timestamps stall or creep closes a record here, as a long GOP does at ``step_s``."""
        return int(self.step_s * MAX_FPS) + 2

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
    damaged_frames: int = 0  # frames the decoder output with errors concealed (damaged input)
    raw_mvs: tuple[np.ndarray, ...] | None = None
    keyframe: np.ndarray | None = None  # (H, W, 3) RGB of the first frame, when configured
    # (T, Hm, Wm) uint8: each decoded frame's mean luma per macroblock (the flash check's input)
    luma: np.ndarray | None = None

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
