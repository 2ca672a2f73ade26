"""Residual maps: |luma - motion-compensated prediction| per macroblock, rebuilt from the vectors.

FFmpeg exports no codec residuals, so the prediction is rebuilt by applying a frame's list0
vectors to its reference's luma at 1/``residual_scale`` resolution. With ``residual_frames="all"``
every frame is compared with the frame displayed before it (list1-only blocks predicted with zero
motion); with ``"IP"`` only I- and P-frames get maps, each P-frame against the previous I/P frame
(the frame its list0 vectors point into, as in CoViAR), and a B-frame's luma is never read. Either
way it approximates the codec's residual, cheaply and monotone in prediction error.
"""

from __future__ import annotations

import av
import cv2
import numpy as np

from streaming.gop import MB, ExtractConfig
from streaming.kernels import residual_into, subsample_into
from streaming.media import luma


class ResidualMaps:
    """The previous reference's small luma, and the maps of the frames after it."""

    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg
        self._prev: np.ndarray | None = None  # the last reference frame's small luma
        self._spare: np.ndarray | None = None  # the one before it: the next small luma's buffer

    def forget(self) -> None:
        """No reference any more (a new decoder context, a drain, a mode change)."""
        self._prev = None

    def made_for(self, ptype: str) -> bool:
        """Whether a frame of this type gets a residual map, and so is the next one's reference."""
        cfg = self.cfg
        return cfg.residuals and not cfg.keyframes_only and (cfg.residual_frames == "all" or ptype != "B")

    def reference(self, frame: av.VideoFrame, hm: int, wm: int) -> None:
        """Remember ``frame`` as the next frame's reference without making its map (a resume
        decodes frames that earlier records already covered)."""
        self._prev = self._small_luma(frame, hm, wm)

    def into(self, frame: av.VideoFrame, flow: np.ndarray, out: np.ndarray, key: bool, ptype: str) -> None:
        """The frame's residual map into ``out`` (zeros on key frames, without a reference and on
        frames that get no map); ``flow`` is its list0 vector field."""
        if not self.made_for(ptype):
            out.fill(0.0)
            return
        hm, wm = out.shape
        small = self._small_luma(frame, hm, wm, into=self._spare)
        prev, self._prev = self._prev, small
        self._spare = prev
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
