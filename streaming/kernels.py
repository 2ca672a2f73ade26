"""Compiled per-frame kernels (numba) for the extraction hot path.

The whole feature computation must cost a small fraction of decoding itself, and a dozen numpy
passes over a frame's thousands of motion-vector records would not, so the two per-frame loops are
compiled: one pass over FFmpeg's AVMotionVector records, and one pass over the macroblocks of a
small luma plane. ``cache=True``
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

    A macroblock predicted as one 16x16 partition (99% of H.264 records) has exactly one record
    per list, so its mean is that record: the first pass stores it directly, reading the record
    fields as columns with no data-dependent branch on the list. Smaller partitions (an MPEG-4
    4MV or H.264 8x8 macroblock tiles its list with several records, never with a 16x16 one) are
    accumulated and normalised in a second pass over those records only.
    """
    hm, wm = out.shape[2], out.shape[3]
    out[:] = 0.0
    n = rec.shape[0]
    if n == 0:
        return
    source, bw, bh = rec["source"], rec["w"], rec["h"]
    dst_x, dst_y = rec["dst_x"], rec["dst_y"]
    motion_x, motion_y = rec["motion_x"], rec["motion_y"]
    inv_scale = np.float32(1.0) / np.float32(max(rec["motion_scale"][0], 1))  # constant within a codec
    partial = np.empty(n, np.int32)
    n_partial = 0
    for i in range(n):
        y = np.int32(dst_y[i]) >> 4
        x = np.int32(dst_x[i]) >> 4
        if y < 0 or x < 0:
            continue
        y = min(y, hm - 1)
        x = min(x, wm - 1)
        li = np.int32(source[i] > 0)
        if bw[i] == 16 and bh[i] == 16:
            out[li, 0, y, x] = np.float32(motion_x[i]) * inv_scale
            out[li, 1, y, x] = np.float32(motion_y[i]) * inv_scale
        else:
            partial[n_partial] = i
            n_partial += 1
    if n_partial == 0:
        return
    area[:] = 0.0
    for j in range(n_partial):
        i = partial[j]
        y = min(np.int32(dst_y[i]) >> 4, hm - 1)
        x = min(np.int32(dst_x[i]) >> 4, wm - 1)
        li = np.int32(source[i] > 0)
        if area[li, y, x] == 0:  # first partition here: a (malformed) 16x16 record beside it is dropped
            out[li, 0, y, x] = 0.0
            out[li, 1, y, x] = 0.0
        a = np.float32(np.int32(bw[i]) * np.int32(bh[i]))
        f = a * inv_scale
        out[li, 0, y, x] += f * np.float32(motion_x[i])
        out[li, 1, y, x] += f * np.float32(motion_y[i])
        area[li, y, x] += a
    for j in range(n_partial):
        i = partial[j]
        y = min(np.int32(dst_y[i]) >> 4, hm - 1)
        x = min(np.int32(dst_x[i]) >> 4, wm - 1)
        li = np.int32(source[i] > 0)
        if area[li, y, x] > 0:  # normalise each macroblock once
            inv = np.float32(1.0) / area[li, y, x]
            out[li, 0, y, x] *= inv
            out[li, 1, y, x] *= inv
            area[li, y, x] = 0.0


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
    if px == 1:  # one sample per macroblock: the hottest case, so no per-sample helper call
        for my in range(min(hm, h)):
            for mx in range(min(wm, w)):
                dx = list0[0, my, mx]
                dy = list0[1, my, mx]
                c = np.float32(cur[my, mx])
                if dx == 0 and dy == 0:  # static macroblock: the reference sample itself
                    out[my, mx] = abs(c - np.float32(ref[my, mx]))
                    continue
                y = np.float32(my) + dy * inv
                x = np.float32(mx) + dx * inv
                fy = np.floor(y)
                fx = np.floor(x)
                wy = y - fy
                wx = x - fx
                y0 = min(max(int(fy), 0), h - 1)
                x0 = min(max(int(fx), 0), w - 1)
                y1 = min(max(int(fy) + 1, 0), h - 1)
                x1 = min(max(int(fx) + 1, 0), w - 1)
                top = (1 - wx) * np.float32(ref[y0, x0]) + wx * np.float32(ref[y0, x1])
                bottom = (1 - wx) * np.float32(ref[y1, x0]) + wx * np.float32(ref[y1, x1])
                out[my, mx] = abs(c - ((1 - wy) * top + wy * bottom))
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


@numba.njit(cache=True, nogil=True)
def subsample_into(plane: np.ndarray, step: int, out: np.ndarray) -> None:  # pragma: no cover - jit
    """``out[i, j] = plane[i * step, j * step]``: point-sampled luma straight from the decoder's
    plane (one pass, no temporary; ``out`` is reused frame after frame)."""
    for i in range(out.shape[0]):
        row = plane[i * step]
        for j in range(out.shape[1]):
            out[i, j] = row[j * step]


@numba.njit(cache=True, nogil=True)
def block_luma_into(plane: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - jit
    """Each macroblock's mean of the 16 samples at every 4th pixel of every 4th row, rounded half
    to even: what OpenCV's area resize of the ``[::4, ::4]`` samples gives when the frame is a
    whole number of macroblocks, in one pass over the decoder's plane and with no copy."""
    for my in range(out.shape[0]):
        for mx in range(out.shape[1]):
            s = np.int32(0)
            for a in range(4):
                row = plane[my * MB + 4 * a]
                for b in range(4):
                    s += np.int32(row[mx * MB + 4 * b])
            q = s >> 4
            r = s & 15
            if r > 8 or (r == 8 and q & 1):
                q += 1
            out[my, mx] = q


@numba.njit(cache=True, nogil=True, fastmath=True)
def gop_maps_into(
    mv: np.ndarray, res: np.ndarray, maps: np.ndarray, mag0_mean: np.ndarray
) -> None:  # pragma: no cover - jit
    """A GOP's per-macroblock summaries over time, as the student reads them, in two passes
    over its float32 vectors (T, 2, 2, hm, wm) and residuals (R, hm, wm): ``maps`` (6, hm, wm)
    gets the mean list0 dx and dy, the mean list0 and list1 magnitudes, and the residuals' mean
    and standard deviation (unscaled); ``mag0_mean`` (T,) each frame's mean list0 magnitude."""
    t_n, hm, wm = mv.shape[0], mv.shape[3], mv.shape[4]
    r_n = res.shape[0]
    maps[:] = 0.0
    for t in range(t_n):
        frame_sum = np.float32(0.0)
        for y in range(hm):
            for x in range(wm):
                dx, dy = mv[t, 0, 0, y, x], mv[t, 0, 1, y, x]
                m0 = np.sqrt(dx * dx + dy * dy)
                maps[0, y, x] += dx
                maps[1, y, x] += dy
                maps[2, y, x] += m0
                ex, ey = mv[t, 1, 0, y, x], mv[t, 1, 1, y, x]
                maps[3, y, x] += np.sqrt(ex * ex + ey * ey)
                frame_sum += m0
        mag0_mean[t] = frame_sum / np.float32(hm * wm)
    for r in range(r_n):
        for y in range(hm):
            for x in range(wm):
                maps[4, y, x] += res[r, y, x]
    inv_t = np.float32(1.0) / np.float32(max(t_n, 1))
    inv_r = np.float32(1.0) / np.float32(max(r_n, 1))
    for y in range(hm):
        for x in range(wm):
            for k in range(4):
                maps[k, y, x] *= inv_t
            maps[4, y, x] *= inv_r
    for r in range(r_n):
        for y in range(hm):
            for x in range(wm):
                d = res[r, y, x] - maps[4, y, x]
                maps[5, y, x] += d * d
    for y in range(hm):
        for x in range(wm):
            maps[5, y, x] = np.float32(np.sqrt(maps[5, y, x] * inv_r))
