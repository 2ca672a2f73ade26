"""Compiled per-frame kernels (numba) for the extraction hot path.

The budget is tight: the whole feature computation must cost a small fraction of decoding itself
(about 0.2 ms per 720p frame on one core). A dozen numpy passes over ~3,400 motion-vector records
per frame already cost that, so the two per-frame loops are compiled: one pass over FFmpeg's
AVMotionVector records, and one pass over the macroblocks of a small luma plane. ``cache=True``
keeps the machine code next to this file, so only the first run on a machine compiles.
"""

from __future__ import annotations

import numba
import numpy as np

MB = 16


@numba.njit(cache=True, nogil=True)
def mv_field_into(rec: np.ndarray, out: np.ndarray, area: np.ndarray) -> None:  # pragma: no cover - jit
    """Area-weighted mean motion per macroblock into ``out`` (2 lists, 2 components, hm, wm).

    ``source`` < 0 is list0 (past reference), > 0 list1 (future). Motion is ``src - dst`` in
    pixels. ``area`` is scratch (2, hm, wm).
    """
    hm, wm = out.shape[2], out.shape[3]
    out[:] = 0.0
    area[:] = 0.0
    for i in range(rec.shape[0]):
        r = rec[i]
        li = 1 if r.source > 0 else 0
        y = min(r.dst_y // MB, hm - 1)
        x = min(r.dst_x // MB, wm - 1)
        if y < 0 or x < 0:
            continue
        a = np.float32(r.w) * np.float32(r.h)
        s = np.float32(max(r.motion_scale, 1))
        out[li, 0, y, x] += a * np.float32(r.motion_x) / s
        out[li, 1, y, x] += a * np.float32(r.motion_y) / s
        area[li, y, x] += a
    for li in range(2):
        for y in range(hm):
            for x in range(wm):
                if area[li, y, x] > 0:
                    out[li, 0, y, x] /= area[li, y, x]
                    out[li, 1, y, x] /= area[li, y, x]


@numba.njit(cache=True, nogil=True, fastmath=True)
def residual_into(
    cur: np.ndarray, ref: np.ndarray, list0: np.ndarray, scale: int, out: np.ndarray
) -> None:  # pragma: no cover - jit
    """Mean |cur - prediction| per macroblock into ``out`` (hm, wm).

    ``cur`` and ``ref`` are luma planes at 1/``scale`` of the macroblock-aligned size; the
    prediction samples ``ref`` bilinearly at each pixel displaced by its macroblock's list0 motion
    (in full-resolution pixels, so divided by ``scale``), clamped at the borders. The displacement
    is constant over a macroblock, so the integer offset and the bilinear weights are too.
    """
    h, w = cur.shape
    hm, wm = out.shape
    px = MB // scale
    inv = np.float32(1.0) / np.float32(scale)
    for my in range(hm):
        for mx in range(wm):
            dx = list0[0, my, mx] * inv
            dy = list0[1, my, mx] * inv
            ys, xs = my * px, mx * px
            if dx == 0 and dy == 0:  # static macroblock: the prediction is the reference itself
                acc = np.float32(0.0)
                for yy in range(ys, min(ys + px, h)):
                    for xx in range(xs, min(xs + px, w)):
                        acc += abs(np.float32(cur[yy, xx]) - np.float32(ref[yy, xx]))
                out[my, mx] = acc / np.float32(px * px)
                continue
            ix = int(dx) if dx >= 0 or dx == int(dx) else int(dx) - 1  # floor
            iy = int(dy) if dy >= 0 or dy == int(dy) else int(dy) - 1
            fx = np.float32(dx - ix)
            fy = np.float32(dy - iy)
            w00 = (1 - fx) * (1 - fy)
            w01 = fx * (1 - fy)
            w10 = (1 - fx) * fy
            w11 = fx * fy
            acc = np.float32(0.0)
            inside = ys + iy >= 0 and xs + ix >= 0 and ys + px + iy + 1 < h and xs + px + ix + 1 < w
            for yy in range(ys, min(ys + px, h)):
                for xx in range(xs, min(xs + px, w)):
                    if inside:
                        y0 = yy + iy
                        x0 = xx + ix
                        y1 = y0 + 1
                        x1 = x0 + 1
                    else:
                        y0 = min(max(yy + iy, 0), h - 1)
                        x0 = min(max(xx + ix, 0), w - 1)
                        y1 = min(max(yy + iy + 1, 0), h - 1)
                        x1 = min(max(xx + ix + 1, 0), w - 1)
                    pred = (
                        w00 * np.float32(ref[y0, x0])
                        + w01 * np.float32(ref[y0, x1])
                        + w10 * np.float32(ref[y1, x0])
                        + w11 * np.float32(ref[y1, x1])
                    )
                    acc += abs(np.float32(cur[yy, xx]) - pred)
            out[my, mx] = acc / np.float32(px * px)
