"""A bounded coverage-guided pass over every wire parser (``make fuzz`` runs longer), and the
inputs earlier passes found, kept as regressions."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from streaming.errors import SnapshotError
from streaming.snapshot import StreamSnapshot
from streaming.tsdemux import TsDemuxer
from tests.conftest import rewrite_npz
from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("GOPWATCH_FUZZ_SECONDS", "3"))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_fuzzing_pass_finds_no_crash(target, tmp_path):
    cmd = [sys.executable, "-m", "tests.fuzz.run", target, str(SECONDS), str(tmp_path)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 120)
    crash = r.stderr.find("Uncaught Python exception")  # the traceback, not only libFuzzer's tail
    assert r.returncode == 0, r.stderr[crash : crash + 3000] if crash >= 0 else r.stderr[-3000:]
    assert "Done" in r.stderr and "executed_units" in r.stderr


def test_found_by_fuzzing_a_pat_whose_pointer_runs_off_the_packet():
    pat = b"\x47\x40\x00\x10" + b"\xb6" + b"\x00" * 183  # pointer field 182: no room for a section
    demux = TsDemuxer()
    assert demux.feed(pat) == [] and demux.bad_tables == 1 and demux.pmt_pid is None


def test_found_by_fuzzing_a_snapshot_whose_arrays_are_not_a_zip():
    good = (ROOT / "tests/fuzz/corpus/snapshot/snapshot.gws").read_bytes()
    StreamSnapshot.from_bytes(good)
    head_end = 8 + int.from_bytes(good[4:8], "big")
    # an end-of-central-directory record that points past the end of the file
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, 46, 1000, 0)
    with pytest.raises(SnapshotError, match="BadZipFile"):
        StreamSnapshot.from_bytes(good[:head_end] + eocd)


def test_found_by_fuzzing_a_snapshot_whose_zip_entry_claims_compressed_patched_data():
    good = (ROOT / "tests/fuzz/corpus/snapshot/with-sound.gws").read_bytes()
    at = good.index(b"PK\x01\x02", good.index(b"PK\x01\x02") + 1)  # the second entry's directory record
    flags = int.from_bytes(good[at + 8 : at + 10], "little") | 0x20  # bit 5: compressed patched data
    bad = good[: at + 8] + flags.to_bytes(2, "little") + good[at + 10 :]
    with pytest.raises(SnapshotError, match="NotImplementedError"):
        StreamSnapshot.from_bytes(bad)


def _with_pic(npy: bytes, method: int = zipfile.ZIP_STORED) -> bytes:
    """``with-sound.gws`` with its ring's picture replaced by ``npy`` (a valid zip around it)."""
    good = (ROOT / "tests/fuzz/corpus/snapshot/with-sound.gws").read_bytes()
    head_end = 8 + int.from_bytes(good[4:8], "big")
    return good[:head_end] + rewrite_npz(good[head_end:], lambda _: npy, "ring.0.pic.npy", method)


def _npy(header: str, data: bytes = b"") -> bytes:
    h = header.encode().ljust(118) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + data


def test_found_by_fuzzing_a_snapshot_array_whose_header_numpy_cannot_tokenize():
    """``np.load`` let tokenize.TokenError out of an unbalanced header: a worker that restored
    such a snapshot crashed instead of starting the stream afresh."""
    pic = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 63), }"
    StreamSnapshot.from_bytes(_with_pic(_npy(pic, bytes(4 * 63))))
    with pytest.raises(SnapshotError, match="TokenError"):
        StreamSnapshot.from_bytes(_with_pic(_npy(pic.replace("'descr':", "'descr'("), bytes(4 * 63))))


@pytest.mark.parametrize(
    ("npy", "method", "reason"),
    [
        (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 63), }", bytes(252)),
         zipfile.ZIP_STORED, "does not match its"),
        (_npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", bytes(8)),
         zipfile.ZIP_STORED, "not a numeric array"),
        (_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 63), }", bytes(252)),
         zipfile.ZIP_DEFLATED, "is compressed"),
    ],
)  # fmt: skip
def test_a_snapshot_array_is_checked_against_its_bytes_before_anything_is_allocated(npy, method, reason):
    with pytest.raises(SnapshotError, match=reason):
        StreamSnapshot.from_bytes(_with_pic(npy, method))


@pytest.mark.parametrize("field", ["window", "gop_index"])
def test_a_snapshot_head_with_infinity_or_nesting_too_deep_is_corrupt(field):
    good = (ROOT / "tests/fuzz/corpus/snapshot/with-sound.gws").read_bytes()
    n = int.from_bytes(good[4:8], "big")
    head = good[8 : 8 + n].replace(f'"{field}":'.encode(), f'"{field}":Infinity,"x":'.encode())
    with pytest.raises(SnapshotError, match="OverflowError"):
        StreamSnapshot.from_bytes(good[:4] + struct.pack(">I", len(head)) + head + good[8 + n :])
    deep = b"[" * 100_000
    with pytest.raises(SnapshotError, match="RecursionError"):
        StreamSnapshot.from_bytes(good[:4] + struct.pack(">I", len(deep)) + deep)
