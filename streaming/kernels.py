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


@numba.njit(cache=True, nogil=True, fastmath=True)
def mv_field_into(rec: np.ndarray, out: np.ndarray, area: np.ndarray) -> None:  # pragma: no cover - jit
    """Area-weighted mean motion per macroblock into ``out`` (2 lists, 2 components, hm, wm).

    ``source`` < 0 is list0 (past reference), > 0 list1 (future). Motion is ``src - dst`` in
    pixels (``motion_x / motion_scale``). ``area`` is scratch (2, hm, wm).
    """
    hm, wm = out.shape[2], out.shape[3]
    out[:] = 0.0
    area[:] = 0.0
    last_scale = -1
    inv_scale = np.float32(1.0)
    for i in range(rec.shape[0]):
        r = rec[i]
        y = r.dst_y // MB
        x = r.dst_x // MB
        if y < 0 or x < 0:
            continue
        y = min(y, hm - 1)
        x = min(x, wm - 1)
        li = 1 if r.source > 0 else 0
        if r.motion_scale != last_scale:  # constant within a codec (H.264: quarter pixels)
            last_scale = r.motion_scale
            inv_scale = np.float32(1.0) / np.float32(max(last_scale, 1))
        a = np.float32(np.int32(r.w) * np.int32(r.h))
        f = a * inv_scale
        out[li, 0, y, x] += f * np.float32(r.motion_x)
        out[li, 1, y, x] += f * np.float32(r.motion_y)
        area[li, y, x] += a
    for li in range(2):
        for y in range(hm):
            for x in range(wm):
                if area[li, y, x] > 0:
                    inv = np.float32(1.0) / area[li, y, x]
                    out[li, 0, y, x] *= inv
                    out[li, 1, y, x] *= inv


@numba.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _bilinear(img: np.ndarray, y: float, x: float) -> np.float32:  # pragma: no cover - jit
    """``img`` sampled bilinearly at (y, x), coordinates clamped to the plane."""
    h, w = img.shape
    fy = np.floor(y)
    fx = np.floor(x)
    wy = np.float32(y - fy)
    wx = np.float32(x - fx)
    y0 = min(max(int(fy), 0), h - 1)
    x0 = min(max(int(fx), 0), w - 1)
    y1 = min(max(int(fy) + 1, 0), h - 1)
    x1 = min(max(int(fx) + 1, 0), w - 1)
    top = (1 - wx) * np.float32(img[y0, x0]) + wx * np.float32(img[y0, x1])
    bottom = (1 - wx) * np.float32(img[y1, x0]) + wx * np.float32(img[y1, x1])
    return (1 - wy) * top + wy * bottom


@numba.njit(cache=True, nogil=True, fastmath=True)
def residual_into(
    cur: np.ndarray, ref: np.ndarray, list0: np.ndarray, scale: int, out: np.ndarray
) -> None:  # pragma: no cover - jit
    """Mean |cur - prediction| per macroblock into ``out`` (hm, wm).

    ``cur`` and ``ref`` are luma planes at 1/``scale`` of the macroblock-aligned size; the
    prediction samples ``ref`` bilinearly at each pixel displaced by its macroblock's list0 motion
    (in full-resolution pixels, so divided by ``scale``), clamped at the borders. The displacement
    is constant over a macroblock, so the integer offset and the bilinear weights are too, and a
    block whose samples all stay inside the plane needs no clamping.
    """
    h, w = cur.shape
    hm, wm = out.shape
    px = MB // scale
    inv = np.float32(1.0) / np.float32(scale)
    norm = np.float32(1.0) / np.float32(px * px)
    if px == 1:  # one sample per macroblock
        for my in range(min(hm, h)):
            for mx in range(min(wm, w)):
                out[my, mx] = abs(
                    np.float32(cur[my, mx])
                    - _bilinear(ref, my + list0[1, my, mx] * inv, mx + list0[0, my, mx] * inv)
                )
        return
    for my in range(hm):
        ys = my * px
        ye = min(ys + px, h)
        for mx in range(wm):
            xs = mx * px
            xe = min(xs + px, w)
            dx = list0[0, my, mx] * inv
            dy = list0[1, my, mx] * inv
            acc = np.float32(0.0)
            if dx == 0 and dy == 0:  # static macroblock: the prediction is the reference itself
                for yy in range(ys, ye):
                    for xx in range(xs, xe):
                        acc += abs(np.float32(np.int32(cur[yy, xx]) - np.int32(ref[yy, xx])))
                out[my, mx] = acc * norm
                continue
            fdx = np.floor(dx)
            fdy = np.floor(dy)
            ix = int(fdx)
            iy = int(fdy)
            fx = np.float32(dx - fdx)
            fy = np.float32(dy - fdy)
            w00 = (1 - fx) * (1 - fy)
            w01 = fx * (1 - fy)
            w10 = (1 - fx) * fy
            w11 = fx * fy
            if ys + iy >= 0 and xs + ix >= 0 and ye + iy < h and xe + ix < w:
                for yy in range(ys, ye):
                    y0 = yy + iy
                    for xx in range(xs, xe):
                        x0 = xx + ix
                        pred = (
                            w00 * np.float32(ref[y0, x0])
                            + w01 * np.float32(ref[y0, x0 + 1])
                            + w10 * np.float32(ref[y0 + 1, x0])
                            + w11 * np.float32(ref[y0 + 1, x0 + 1])
                        )
                        acc += abs(np.float32(cur[yy, xx]) - pred)
            else:
                for yy in range(ys, ye):
                    y0 = min(max(yy + iy, 0), h - 1)
                    y1 = min(max(yy + iy + 1, 0), h - 1)
                    for xx in range(xs, xe):
                        x0 = min(max(xx + ix, 0), w - 1)
                        x1 = min(max(xx + ix + 1, 0), w - 1)
                        pred = (
                            w00 * np.float32(ref[y0, x0])
                            + w01 * np.float32(ref[y0, x1])
                            + w10 * np.float32(ref[y1, x0])
                            + w11 * np.float32(ref[y1, x1])
                        )
                        acc += abs(np.float32(cur[yy, xx]) - pred)
            out[my, mx] = acc * norm
