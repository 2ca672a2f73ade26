"""A bounded reader for the ``.npz`` files gopwatch writes itself and reads back from places it
does not control: stream snapshots from the state topic, knowledge-base folders from ``kb import``."""

from __future__ import annotations

import io
import math
import struct
import tokenize
import zipfile
import zlib

import numpy as np


def read_npz(data: bytes, max_entries: int) -> dict[str, np.ndarray]:
    """The arrays of a stored (uncompressed) ``.npz``, as ``np.savez`` writes it. Raises ValueError,
    with the reason, on anything else: more than ``max_entries`` entries,
    a compressed entry, a header whose shape does not match the bytes that are there, a dtype that
    is not numeric. All of it is checked before anything is allocated; ``np.load`` allocates
    whatever shape a header declares first."""
    try:
        return _read(data, max_entries)
    # what zipfile raises on a damaged archive, and tokenize on a header numpy passes it
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError, OSError,
            struct.error, tokenize.TokenError) as e:  # fmt: skip
        raise ValueError(f"{type(e).__name__}: {e}") from None


def _read(data: bytes, max_entries: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        entries = zf.infolist()
        if len(entries) > max_entries:
            raise ValueError(f"{len(entries)} arrays, at most {max_entries}")
        for info in entries:
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > len(data):
                raise ValueError(f"array {info.filename!r} is compressed or larger than its file")
            raw = zf.read(info)
            f = io.BytesIO(raw)
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"array {info.filename!r}: .npy version {version}")
            fmt = np.lib.format
            header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = header(f)
            count = math.prod(shape)  # Python integers: no overflow
            if dtype.kind not in "biuf" or dtype.itemsize == 0 or min(shape, default=0) < 0:
                raise ValueError(f"array {info.filename!r}: not a numeric array ({dtype}, shape {shape})")
            if count * dtype.itemsize != len(raw) - f.tell():
                raise ValueError(f"array {info.filename!r}: its header does not match its {len(raw)} bytes")
            flat = np.frombuffer(raw, dtype, count, offset=f.tell()).copy()
            out[info.filename.removesuffix(".npy")] = flat.reshape(shape, order="F" if fortran else "C")
    return out
