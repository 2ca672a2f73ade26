"""A JPEG still as its dequantised DCT coefficients, without decoding it to pixels.

The file's markers are walked first, in Python, and everything the coefficient reader would
otherwise trust is checked before it runs: the start and end markers (a truncated file has no
end), the frame type (baseline, extended and progressive Huffman; arithmetic coding and lossless
are refused), the dimensions (bounded before anything is allocated), and the components (grey or
Y/Cb/Cr; CMYK and others are refused). Only then are the quantised coefficients read (the
native reader, ``dct.c``, else ``jpeglib``: libjpeg, MPL-2.0) and multiplied by the file's own
quantisation tables. A reader may keep only the lowest frequencies: channels are in the JPEG's
zig-zag order, so the first ``keep`` are the ``keep`` lowest.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.errors import JpegError

MAX_SIDE = 8192
MAX_PIXELS = 40_000_000
MAX_BYTES = 16 * 1024 * 1024
# natural index (u*8+v) of each zig-zag position: lowest frequencies first
ZIGZAG = (0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
          13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
          52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63)  # fmt: skip
SOF_SUPPORTED = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}
SOF_REFUSED = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical", 0xC7: "hierarchical",
               0xC9: "arithmetic-coded", 0xCA: "arithmetic-coded progressive",
               0xCB: "arithmetic-coded lossless", 0xCD: "arithmetic-coded hierarchical",
               0xCE: "arithmetic-coded hierarchical", 0xCF: "arithmetic-coded hierarchical"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class JpegInfo:
    width: int
    height: int
    components: int  # 1 (grey) or 3 (Y, Cb, Cr)
    sampling: tuple[tuple[int, int], ...]  # per component (vertical, horizontal)
    mode: str  # baseline, extended or progressive


@dataclass(frozen=True, slots=True)
class Coefficients:
    """Dequantised DCT coefficients, (keep, rows, cols) per plane, channel k holding coefficient
    ``ZIGZAG[k]`` (the ``keep`` lowest frequencies); the chroma planes are None for a grey JPEG."""

    info: JpegInfo
    y: np.ndarray
    cb: np.ndarray | None
    cr: np.ndarray | None
    log_scaled: bool = False  # values are sign(v) * log(1 + |v|), the network's input scale
    quarter: np.ndarray | None = None  # where asked: the luma at a quarter of the size (uint8)

    @property
    def subsampling(self) -> str:
        """``4:2:0``, ``4:2:2``, ``4:4:4`` (or ``grey``), from the block grids' ratio."""
        if self.cb is None:
            return "grey"
        ry, rx = self.y.shape[1] / self.cb.shape[1], self.y.shape[2] / self.cb.shape[2]
        return {(True, True): "4:2:0", (False, True): "4:2:2"}.get((ry > 1.5, rx > 1.5), "4:4:4")


def inspect(data: bytes) -> JpegInfo:
    """The frame header of ``data``, or :class:`JpegError` saying why it cannot be read."""
    if len(data) > MAX_BYTES:
        raise JpegError(f"{len(data):,} bytes, over the {MAX_BYTES:,}-byte limit")
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        raise JpegError("not a JPEG (no start-of-image marker)")
    if b"\xff\xd9" not in data[-64:]:
        raise JpegError("truncated (no end-of-image marker)")
    i, info = 2, None
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise JpegError(f"damaged: expected a marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2 or i + 2 + length > len(data):
            raise JpegError(f"damaged: segment 0x{marker:02X} at byte {i} runs past the end")
        if marker in SOF_REFUSED:
            raise JpegError(f"{SOF_REFUSED[marker]} JPEG is not supported")
        if marker in SOF_SUPPORTED:
            info = _frame(data[i + 4 : i + 2 + length], SOF_SUPPORTED[marker])
        if marker == 0xDA:  # start of scan: the header is over
            break
        i += 2 + length
    if info is None:
        raise JpegError("no frame header (SOF) before the first scan")
    return info


def _frame(seg: bytes, mode: str) -> JpegInfo:
    if len(seg) < 6:
        raise JpegError("damaged frame header")
    precision, height, width, n = struct.unpack(">BHHB", seg[:6])
    if precision != 8:
        raise JpegError(f"{precision}-bit samples are not supported (8-bit only)")
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE) or width * height > MAX_PIXELS:
        raise JpegError(f"{width}x{height}: outside 1..{MAX_SIDE} per side or over {MAX_PIXELS:,} pixels")
    if n not in (1, 3):
        raise JpegError(f"{n} colour components ({'CMYK' if n == 4 else 'unsupported'}); grey or YCbCr only")
    if len(seg) < 6 + 3 * n:
        raise JpegError("damaged frame header")
    sampling = tuple((seg[7 + 3 * k] & 0x0F, seg[7 + 3 * k] >> 4) for k in range(n))
    if any(not (1 <= v <= 2 and 1 <= h <= 2) for v, h in sampling):
        raise JpegError(f"sampling factors {sampling} are not supported (1 or 2 only)")
    return JpegInfo(width, height, n, sampling, mode)


def coefficients(
    data: bytes, log_scaled: bool = False, keep: int = 64, quarter: bool = False
) -> Coefficients:
    """Check ``data`` (:func:`inspect`), then read and dequantise the ``keep`` lowest-frequency
    DCT coefficients of each block (and put them on the network's log scale when
    ``log_scaled``): with the native reader where it was built (``make setup``), else with
    jpeglib. With ``quarter``, also the luma at a quarter of the size (:func:`quarter_luma`)."""
    if not 1 <= keep <= 64:
        raise ValueError(f"keep {keep}: 1..64 coefficients")
    info = inspect(data)
    native = _native()
    if native is not None:
        return _read_native(native, data, info, log_scaled, keep, quarter)
    c = _read_jpeglib(data, info, keep, quarter)
    if log_scaled:
        planes = [None if p is None else _log(p) for p in (c.y, c.cb, c.cr)]
        return Coefficients(info, planes[0], planes[1], planes[2], True, c.quarter)  # type: ignore[arg-type]
    return c


def _top_left_means() -> np.ndarray:
    """Each of :data:`QUARTER_FROM`'s coefficients' share of a block's top-left 4x4 area mean, for
    the orthonormal DCT JPEG uses, computed as ``dct.c`` does (the same doubles, then float32)."""

    def half(f: int) -> float:  # one dimension's basis at frequency f, averaged over its first half
        return sum((0.5 if f else 0.5 / math.sqrt(2.0)) * math.cos((2 * x + 1) * f * math.pi / 16) / 4
                   for x in range(4))  # fmt: skip

    return np.array([half(n // 8) * half(n % 8) for n in QUARTER_FROM], np.float32)


# A block's four 4x4 area means take eight coefficients (natural index v*8+u): frequencies 0, 1 and 3
# (even ones above 0 sum to zero over half a block). An odd frequency's half-block sum changes sign
# between the halves, so the means are the DC term plus or minus a horizontal, a vertical and a
# diagonal sum, from each term's share of the top-left mean.
QUARTER_FROM = (0, 1, 8, 9, 3, 24, 25, 11)
_W = _top_left_means()


def quarter_luma(y: np.ndarray, info: JpegInfo) -> np.ndarray:
    """The luma at a quarter of the size (uint8, ceil(height / 4) x ceil(width / 4)) from the
    dequantised luma coefficients in natural order, (64, rows, cols): each block's four 4x4 area
    means, to within libjpeg's own quarter-scale decode's rounding. ``dct.c`` writes the same
    bytes while it reads (the same float32 sums in the same order); this is the jpeglib path's."""
    w = _W
    m = np.float32(128) + w[0] * y[0]
    h = w[1] * y[1] + w[4] * y[3]
    v = w[2] * y[8] + w[5] * y[24]
    d = w[3] * y[9] + w[6] * y[25] + w[7] * y[11]
    rows, cols = y.shape[1:]
    four = np.empty((rows, 2, cols, 2), np.float32)
    four[:, 0, :, 0], four[:, 0, :, 1] = m + h + v + d, m - h + v - d
    four[:, 1, :, 0], four[:, 1, :, 1] = m + h - v - d, m - h - v + d
    img = four.reshape(2 * rows, 2 * cols)
    out = np.floor(np.clip(img, 0, 255) + np.float32(0.5)).astype(np.uint8)  # dct.c's to_byte
    return out[: _up(info.height, 4), : _up(info.width, 4)]


def compress(x: torch.Tensor) -> torch.Tensor:
    """The network's input scale: coefficients span 0..±2000 and scale with the quality's tables,
    and a signed log evens them (the native reader applies it while reading)."""
    return torch.sign(x) * torch.log1p(x.abs())


def _log(x: np.ndarray) -> np.ndarray:
    return compress(torch.from_numpy(x)).numpy()


NATIVE = Path(__file__).with_name("libgwdct.so.1")  # not *.so: Python would take it for a module
NATIVE_VERSION = 2  # dct.c's gw_version(): the arguments gw_read_dct takes
_lib: list[ctypes.CDLL | None] = []


def _native() -> ctypes.CDLL | None:
    """The native reader (``dct.c``, built by ``make setup``), or None where it is not built or is
    a build of another version (``make setup`` rebuilds it)."""
    if not _lib:
        try:
            lib = ctypes.CDLL(str(NATIVE))
            lib.gw_read_dct.restype = ctypes.c_int
            _lib.append(lib if getattr(lib, "gw_version", lambda: 0)() == NATIVE_VERSION else None)
        except OSError:
            _lib.append(None)
    return _lib[0]


def block_grid(info: JpegInfo) -> list[tuple[int, int]]:
    """Each component's (block rows, block cols), as libjpeg lays them out: the component's
    samples (the picture scaled by its sampling against the largest) in 8x8 blocks, rounded up."""
    vmax = max(v for v, _ in info.sampling)
    hmax = max(h for _, h in info.sampling)
    return [(_up(_up(info.height * v, vmax), 8), _up(_up(info.width * h, hmax), 8)) for v, h in info.sampling]


def _up(a: int, b: int) -> int:
    return (a + b - 1) // b


_ORDER = (ctypes.c_int * 64)(*ZIGZAG)


def _read_native(
    lib: ctypes.CDLL, data: bytes, info: JpegInfo, log_scaled: bool, keep: int = 64, quarter: bool = False
) -> Coefficients:
    grid = block_grid(info)
    small = np.zeros((2 * grid[0][0], 2 * grid[0][1]), np.uint8) if quarter else None
    planes = [np.empty((r, c, keep), np.float32) for r, c in grid]  # channels-last, as dct.c writes
    ptrs = (ctypes.POINTER(ctypes.c_float) * len(planes))(
        *(p.ctypes.data_as(ctypes.POINTER(ctypes.c_float)) for p in planes)
    )
    rows = (ctypes.c_int * len(grid))(*(r for r, _ in grid))
    cols = (ctypes.c_int * len(grid))(*(c for _, c in grid))
    reason = ctypes.create_string_buffer(200)
    out = None if small is None else small.ctypes.data_as(ctypes.c_void_p)  # NULL: no quarter-size luma
    failed = lib.gw_read_dct(data, ctypes.c_ulong(len(data)), len(planes), ptrs, rows, cols, keep, _ORDER,
                             int(log_scaled), out, reason, len(reason))  # fmt: skip
    if failed:
        raise JpegError(f"damaged: {reason.value.decode(errors='replace')[:120]}")
    # (keep, rows, cols) views: the same values as jpeglib's reading, in the memory order the
    # screening network takes without a copy (torch's channels-last)
    y, *chroma = (np.moveaxis(p, -1, 0) for p in planes)
    cb, cr = chroma if chroma else (None, None)
    if small is not None:
        small = small[: _up(info.height, 4), : _up(info.width, 4)]
    return Coefficients(info, y, cb, cr, log_scaled, small)


def _read_jpeglib(data: bytes, info: JpegInfo, keep: int = 64, quarter: bool = False) -> Coefficients:
    import jpeglib

    if jpeglib.version.get() != "turbo210":  # its libjpeg-turbo build reads a third faster than 6b
        with contextlib.suppress(Exception):  # a jpeglib built without it keeps its default libjpeg
            jpeglib.version.set("turbo210")
    fd, path = tempfile.mkstemp(suffix=".jpg", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        jpeg = jpeglib.read_dct(path)
        planes = [jpeg.Y] + ([jpeg.Cb, jpeg.Cr] if info.components == 3 else [])
        tables = [jpeg.get_component_qt(k) for k in range(len(planes))]
    except JpegError:
        raise
    except Exception as e:  # libjpeg's own complaint about the entropy-coded data
        why = (str(e).splitlines() or [type(e).__name__])[0].replace(path, "the still")[:120]
        raise JpegError(f"damaged: {why}") from None
    finally:
        os.unlink(path)
    out, small = [], None
    for plane, qt in zip(planes, tables, strict=True):
        if plane is None:
            raise JpegError("damaged: a colour plane is missing")
        natural = _dequantised(plane, qt)
        if quarter and small is None:
            small = quarter_luma(natural, info)
        out.append(natural[list(ZIGZAG[:keep])])
    cb, cr = (out[1], out[2]) if len(out) == 3 else (None, None)
    return Coefficients(info, out[0], cb, cr, quarter=small)


def _dequantised(plane: np.ndarray, qt: np.ndarray) -> np.ndarray:
    """(rows, cols, 8, 8) int16 quantised -> (64, rows, cols) float32 dequantised, coefficient
    u*8+v in channel u*8+v (:func:`_read_jpeglib` puts them in zig-zag order). Moved as int16
    and multiplied once in the new layout: several times faster than converting, multiplying and
    then transposing the float32 array (the transposed copy dominated reading a still)."""
    rows, cols = plane.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(plane).reshape(rows, cols, 64)).permute(2, 0, 1)
    q = torch.from_numpy(qt.astype(np.float32).reshape(64, 1, 1))
    return (x.to(torch.float32) * q).numpy()
