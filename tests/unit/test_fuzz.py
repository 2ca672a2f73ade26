"""A bounded coverage-guided pass over every wire parser, and the inputs earlier passes found, kept
as regressions.

The pass starts from a fixed seed and stops after a fixed number of inputs, so every build runs
nearly the same search (it drifts only where coverage feedback from Python does): the gate checks
what was searched before a change, and a failure prints its input. ``make fuzz`` is the search,
from a new seed each time; what it finds lands here as a regression and in the seed corpus."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from streaming.errors import SnapshotError
from streaming.extract import StreamExtractor
from streaming.snapshot import StreamSnapshot
from streaming.tsdemux import TsDemuxer
from tests.conftest import rewrite_npz
from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("GOPWATCH_FUZZ_RUNS", "20000"))
SEED = int(os.environ.get("GOPWATCH_FUZZ_SEED", "1"))
SECONDS = 90  # a cap only: the run count ends the pass


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_fuzzing_pass_finds_no_crash(target, tmp_path):
    cmd = [sys.executable, "-m", "tests.fuzz.run", target, str(SECONDS), str(tmp_path), str(RUNS), str(SEED)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # str hashes, and so set orders, as on every run
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 120, env=env)
    crash = r.stderr.find("Uncaught Python exception")  # the traceback, not only libFuzzer's tail
    assert r.returncode == 0, r.stderr[crash : crash + 3000] if crash >= 0 else r.stderr[-3000:]
    assert "Done" in r.stderr and "executed_units" in r.stderr


def _in_child(code: str, seed: str) -> str:
    """What ``code`` prints, run on the seed corpus file ``seed`` in a child process: an input
    that once crashed natively fails its own test if it does again, not the whole run."""
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "tests/fuzz/corpus" / seed)], cwd=ROOT,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def test_found_by_fuzzing_an_aac_track_of_31_channels():
    """PyAV's array view of a frame with more than 8 channels read past FFmpeg's 8 buffer
    pointers: a segmentation fault, the worker gone. The tap now counts such a frame as an error."""
    code = (
        "import sys; from streaming.audio import AudioTap; tap = AudioTap(); "
        "tap.feed(open(sys.argv[1], 'rb').read()); tap.flush(); print(tap.errors)"
    )
    assert int(_in_child(code, "audiotap/aac-31-channels.ts")) >= 1


def test_found_by_fuzzing_a_progressive_jpeg_whose_chroma_is_in_no_scan():
    """libjpeg latches a component's quantisation table only when a scan carries it; the native
    reader read the table of a component no scan carried (a null pointer, the worker gone)."""
    code = (
        "import sys; from models.errors import JpegError; from models.snapshot import jpeg\n"
        "assert jpeg._native() is not None, 'the native reader is not built (make setup)'\n"
        "try: jpeg.coefficients(open(sys.argv[1], 'rb').read(), quarter=True)\n"
        "except JpegError as e: print(e)"
    )
    assert _in_child(code, "jpeg/progressive-chroma-in-no-scan.jpg") == "damaged: component 1 is in no scan"


def test_found_by_fuzzing_an_h264_stream_that_declares_134_million_frames_a_second():
    """The declared rate sized the open record's buffers (48 GiB, a MemoryError); a rate outside
    1..300 is now damage and the default of 25 holds."""
    data = (ROOT / "tests/fuzz/corpus/extract/h264-134-million-fps.ts").read_bytes()
    ex = StreamExtractor("cam-1")
    records = ex.feed(data) + ex.flush()
    assert len(records) == 1 and records[0].end_s - records[0].start_s == pytest.approx(1 / 25)


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
