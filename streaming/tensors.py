"""GOP features -> the student's input arrays (the layout :class:`models.student.StudentConfig`
declares). ``models/`` never sees ``streaming/`` types; this is the one translation."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from models.student import StudentConfig
from streaming.extract import ExtractConfig, GopFeatures
from streaming.kernels import gop_maps_into
from streaming.records import to_float32


def extraction_for(cfg: StudentConfig, base: ExtractConfig | None = None) -> ExtractConfig:
    """``base`` (default settings if None) with the residuals the student learnt from."""
    return replace(
        base or ExtractConfig(), residual_scale=cfg.residual_scale, residual_frames=cfg.residual_frames
    )


# the maps' scales: motion in eighths of a macroblock, residuals in 32 luma levels
_MAP_SCALE = np.array([1 / 8, 1 / 8, 1 / 8, 1 / 8, 1 / 32, 1 / 32], np.float32)[:, None, None]


def _resample(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) == 0:
        return np.zeros(n, np.float32)
    return np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)


def gop_arrays(g: GopFeatures, cfg: StudentConfig) -> dict[str, np.ndarray]:
    """One GOP's inputs: thumb (3, H, W), maps (6, gh, gw), series (4, L), stats (4,)."""
    th, tw = cfg.thumb_hw
    gh, gw = cfg.grid_hw
    thumb = g.thumbnail
    if thumb.shape[:2] != (th, tw):
        thumb = cv2.resize(thumb, (tw, th), interpolation=cv2.INTER_AREA)
    mv = to_float32(g.mv)  # (T, 2, 2, hm, wm)
    types = np.frombuffer(g.frame_types.encode(), np.uint8)
    res = to_float32(g.residual)  # (T, hm, wm)
    if cfg.residual_frames == "IP" and (types != ord("B")).any():
        res = res[types != ord("B")]  # B-frames have no residual map (zeros), not a zero residual
    maps = np.empty((6, *mv.shape[3:]), np.float32)
    mag0_mean = np.empty(len(mv), np.float32)
    gop_maps_into(np.ascontiguousarray(mv), np.ascontiguousarray(res), maps, mag0_mean)
    maps *= _MAP_SCALE
    maps = np.stack([cv2.resize(m, (gw, gh), interpolation=cv2.INTER_AREA) for m in maps])
    series = np.stack(
        [
            _resample(res.mean(axis=(1, 2)) / 32, cfg.series_len),
            _resample(res.reshape(len(res), -1).max(axis=1) / 128 if len(res) else res, cfg.series_len),
            _resample(mag0_mean / 8, cfg.series_len),
            _resample((types == ord("B")).astype(np.float32), cfg.series_len),
        ]
    )
    qp = float(np.nanmean(g.qp)) / 51 if len(g.qp) and not np.isnan(g.qp).all() else 0.5
    stats = np.array(
        [qp, np.log1p(float(g.packet_bytes.sum())) / 16, g.n_frames / 100, float(g.coverage.value != "full")],
        np.float32,
    )
    return {
        # C-contiguous: a transposed view stacks into a transposed corpus, and torch then takes
        # another convolution path, so a freshly built corpus trained differently from a cached one
        "thumb": np.ascontiguousarray(np.moveaxis(thumb, -1, 0), np.float32) / np.float32(255.0),
        "maps": maps.astype(np.float32),
        "series": series.astype(np.float32),
        "stats": stats,
    }


def stack_gops(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def windows(per_gop: dict[str, np.ndarray], window: int) -> dict[str, np.ndarray]:
    """(G, ...) per-GOP arrays of one stream -> (G, window, ...) windows ending at each GOP
    (the stream's first GOPs are padded by repeating the first one)."""
    g = len(next(iter(per_gop.values())))
    idx = np.clip(np.arange(g)[:, None] + np.arange(-window + 1, 1)[None, :], 0, None)
    return {k: v[idx] for k, v in per_gop.items()}
