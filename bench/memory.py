"""Memory under bad input: does a worker's engine give memory back once hostile streams end?

    .venv/bin/python bench/memory.py [--records 10000] [--streams 1000]

One engine in this process, as a worker runs it (the shipped student and its cascade). Its RSS is
taken fresh (after one good 720p stream went through and ended, so one-time initialisation is
counted), after RECORDS bad records spread over STREAMS stream ids (random bytes framed as MPEG-TS,
random payloads, truncated and bit-flipped real segments, a wrong codec, a segment with a wrong
epoch's timestamps), and after every one of those streams ended. The goal: back within 10% of the
fresh RSS. Prints a table; exit code 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from consumers.engine import Engine, InputRecord
from models.registry import SHIPPED
from schemas.records import ControlKind, StreamControl
from schemas.segment import H_RECORD, Codec, Container, RecordKind, SegmentHeaders
from schemas.settings import Settings
from streaming.synth import Encoding, encode_segments, random_scenario

console = Console(width=110)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def record(
    sid: str, offset: int, value: bytes, seq: int, container: Container = Container.MPEGTS
) -> InputRecord:
    h = SegmentHeaders(sequence=seq, media_start_s=seq * 1.0, media_duration_s=1.0, container=container,
                       codec=Codec.H264, ingest_ms=int(time.time() * 1000))  # fmt: skip
    return InputRecord("bench", 0, offset, sid.encode(), value, tuple(h.to_kafka()))


def end(sid: str, offset: int) -> InputRecord:
    ctl = StreamControl(stream_id=sid, kind=ControlKind.END_OF_STREAM, last_sequence=None)
    return InputRecord("bench", 0, offset, sid.encode(), ctl.model_dump_json().encode(),
                       ((H_RECORD, RecordKind.CONTROL.value.encode()),))  # fmt: skip


def bad_payloads(segs: list[bytes], rnd: random.Random) -> list[bytes]:
    """The kinds of bad input the fault runs used, several of each."""
    out = []
    for seg in segs[:4]:
        flipped = bytearray(seg)
        for _ in range(40):
            k = rnd.randrange(2000, len(flipped))
            flipped[k] ^= 0xFF
        out += [
            b"".join(b"\x47" + rnd.randbytes(187) for _ in range(200)),  # random bytes framed as MPEG-TS
            rnd.randbytes(rnd.randrange(1, 376)),  # a short random payload
            seg[: len(seg) // 3],  # truncated
            bytes(flipped),  # bit-flipped
        ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000, help="bad records in all")
    ap.add_argument("--streams", type=int, default=1_000, help="stream ids they are spread over")
    ap.add_argument("--goal", type=float, default=1.10, help="RSS after / fresh RSS must stay under this")
    args = ap.parse_args()
    rnd = random.Random(7)
    with console.status("encoding a 720p25 stream…"):
        _, segs = encode_segments(random_scenario(3, 0.2, Encoding(width=1280, height=720)))
    engine = Engine(Settings(workers=0), SHIPPED)
    offset = 0
    for i, seg in enumerate(segs):  # one good stream through the whole path, then ended
        engine.process(record("warm-up", offset, seg.data, i))
        offset += 1
    engine.process(end("warm-up", offset))
    offset += 1
    gc.collect()
    engine.release_memory()
    fresh = rss_mib()
    payloads = bad_payloads([s.data for s in segs], rnd)
    dead = 0
    peak = fresh
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("bad records", total=args.records)
        for n in range(args.records):
            sid = f"bad-{n % args.streams}"
            out = engine.process(record(sid, offset, payloads[n % len(payloads)], n // args.streams))
            dead += out.outcome == "dead_letter"
            offset += 1
            if n % 500 == 0:
                peak = max(peak, rss_mib())
                bar.update(task, completed=n)
    during = rss_mib()
    open_streams = len(engine.sessions)
    for k in range(args.streams):
        engine.process(end(f"bad-{k}", offset))
        offset += 1
    gc.collect()
    engine.release_memory()
    after = rss_mib()
    t = Table("phase", "RSS MiB", "vs fresh", "open streams", title="engine memory under bad input")
    t.add_row("fresh (one good stream through and ended)", f"{fresh:.0f}", "100%", "0")
    t.add_row(f"after {args.records:,} bad records on {args.streams:,} ids ({dead:,} dead letters)",
              f"{during:.0f} (peak {peak:.0f})", f"{during / fresh:.0%}", str(open_streams))  # fmt: skip
    t.add_row("after every stream ended", f"{after:.0f}", f"{after / fresh:.0%}", str(len(engine.sessions)))
    console.print(t)
    ok = after <= args.goal * fresh
    console.print(f"goal (after ≤ {args.goal:.0%} of fresh): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
