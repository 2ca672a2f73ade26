"""A bounded coverage-guided pass over every wire parser (``make fuzz`` runs longer), and the
inputs earlier passes found, kept as regressions."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from streaming.errors import SnapshotError
from streaming.snapshot import StreamSnapshot
from streaming.tsdemux import TsDemuxer
from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("GOPWATCH_FUZZ_SECONDS", "3"))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_fuzzing_pass_finds_no_crash(target, tmp_path):
    cmd = [sys.executable, "-m", "tests.fuzz.run", target, str(SECONDS), str(tmp_path)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 120)
    assert r.returncode == 0, r.stderr[-3000:]
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
